-- One database per service: nobody reads another service's tables (design.md section 2).
CREATE DATABASE ar_invoice;
CREATE DATABASE ar_payment;
CREATE DATABASE ar_dunning;
CREATE DATABASE ar_notify;
