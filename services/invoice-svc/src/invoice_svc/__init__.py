"""invoice-svc: clients, invoices, credit notes, disputes, payment allocation and AR reports."""

__version__ = "0.1.0"
