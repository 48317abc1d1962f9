"""Stored output files."""
