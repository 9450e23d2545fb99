"""pforte's pluggable listeners, one package each (registered in the `pforte.services` entry points)."""
