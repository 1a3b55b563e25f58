"""ar_events."""
