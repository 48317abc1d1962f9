"""The model catalog and provider status endpoints (issue 4)."""
