"""Reference devices: speaker cluster, e-board, fleet simulator. They know only the spec (loa.protocol)."""
