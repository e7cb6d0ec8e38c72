"""Per kind, the wiring of one object's pass: its state between passes, the ports built from
platforms/, the service call, the status writer, Events and metrics. handlers/ only adapts
kopf's callbacks to these."""
