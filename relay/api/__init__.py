"""The HTTP API v1: one aiohttp application, resources in sibling modules."""
