"""Thin kopf adapters, one module per kind."""
