"""proxyd: the pforte edge daemon (config contract, supervisor, TLS store, state dir, CLI)."""

__version__ = "0.1.0"
