"""The operators' web dashboard (placeholder docstring, replaced below)."""
