"""The backup Jobs' program as files: shipped in a ConfigMap, run in the Job's own image."""
