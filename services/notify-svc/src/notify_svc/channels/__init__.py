"""Adapters that leave the process: SMTP and signed webhooks."""
