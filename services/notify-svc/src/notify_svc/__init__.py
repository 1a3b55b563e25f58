"""notify-svc: personal, consolidated, localized reminders by email and signed webhooks, sent exactly once."""

__version__ = "0.1.0"
