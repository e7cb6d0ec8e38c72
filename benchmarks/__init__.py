"""Benchmarks: scripts that measure and print tables (never timed tests)."""
