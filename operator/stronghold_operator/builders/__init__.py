"""Pure manifest builders returning dicts."""
