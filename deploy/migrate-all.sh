#!/bin/sh
# Apply every service's migrations, each against its own database. URLs come from the environment.
set -eu
python -m invoice_svc migrate
python -m payment_svc migrate
python -m dunning_svc migrate
python -m notify_svc migrate
