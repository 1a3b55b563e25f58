"""dunning_svc."""
