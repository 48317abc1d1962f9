"""Admin API for teams and keys (issue 5)."""
