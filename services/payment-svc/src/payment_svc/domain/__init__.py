"""Pure payment domain: signatures, payload mapping, decline classification."""
