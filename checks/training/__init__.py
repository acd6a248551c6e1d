"""training checks."""
