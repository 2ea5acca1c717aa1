"""Verified backups of a live SQLite database: copy, snapshot, create, verify, restore, store.

A docstring only: the copier child imports :mod:`sidecar.backup.child` and must start light,
so callers import the submodule they use. See docs/design.md, 'Backups'.
"""
