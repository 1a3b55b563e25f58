"""The pure domain of invoice-svc: totals, the invoice life cycle, payment allocation and report formulas."""
