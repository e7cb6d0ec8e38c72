"""How periodic work runs: the one loop every per-object daemon uses."""
