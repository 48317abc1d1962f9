"""Usage reporting (issue 5)."""
