"""performance checks."""
