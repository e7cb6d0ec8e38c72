"""Stronghold operator: a kopf operator that makes the operations guide declarative.

Importing the package registers nothing; ``stronghold_operator.main`` registers the
handlers (``stronghold run`` or ``kopf run -m stronghold_operator.main``).
"""
