"""fairness checks."""
