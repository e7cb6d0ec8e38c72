"""Per kind: observe(ports) -> decide (logic/, pure) -> act(ports) -> a typed status."""
