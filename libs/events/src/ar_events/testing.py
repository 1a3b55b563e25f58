"""pytest plugin: where tests get their broker and database (filled in by the plumbing work)."""
