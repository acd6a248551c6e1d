"""robustness checks."""
