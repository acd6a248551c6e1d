"""explain checks."""
