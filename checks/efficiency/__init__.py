"""efficiency checks."""
