"""Helpers for the bad-input and fault-injection suites (docs/safety.md)."""
