"""shift checks."""
