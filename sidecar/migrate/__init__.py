"""Applying a plan: the preview (what a deploy would do, and what it refuses), the change
applied and verified in the caller's transaction, verified table rebuilds, a fresh database,
and what the desired schema's history and the live rows add to a plan. Callers import the
submodule they use.
"""
