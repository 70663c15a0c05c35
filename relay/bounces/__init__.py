"""Bounces: what a refusal means (classify), reading returned mail (parse), authenticated return paths (verp)."""
