"""ar_ops."""
