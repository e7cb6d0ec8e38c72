"""Probes of the platform's services; a failing service is a result, never an exception."""
