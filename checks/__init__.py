"""The check battery: one module per check, grouped by family."""
