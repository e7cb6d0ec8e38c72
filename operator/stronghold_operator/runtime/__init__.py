"""How periodic work runs: the one scheduler of every kind's passes, and the status writer."""
