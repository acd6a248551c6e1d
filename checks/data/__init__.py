"""data checks."""
