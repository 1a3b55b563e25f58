"""ar_web."""
