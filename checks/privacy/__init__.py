"""privacy checks."""
