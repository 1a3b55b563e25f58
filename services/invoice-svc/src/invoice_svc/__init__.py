"""invoice_svc."""
