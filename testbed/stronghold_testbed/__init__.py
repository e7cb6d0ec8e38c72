"""The local testbed: a real single-node Kubernetes and the platform's services on 127.0.0.1.

A dev-only distribution (``stronghold-testbed``, never in the operator's wheel or image), used
by ``make demo`` and the integration tests; the operator never imports it.
"""
