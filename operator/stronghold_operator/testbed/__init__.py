"""The local testbed: a real single-node Kubernetes and the platform's services on 127.0.0.1.

Used by ``make demo`` and the integration tests; never by the operator itself.
"""
