"""sidecar: a production-safe deployment sidecar for SQLite apps on Docker volumes."""

__version__ = "0.1.0"
