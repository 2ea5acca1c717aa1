"""Pure schema logic: SQL text, catalogues, the desired schema, and the diff into a plan.

Callers import the submodule they use: ``sql`` (tokens, the parenthesis walker), ``clauses``
(reading definitions), ``catalogue``, ``operations`` (a plan is data), ``diff`` (make_plan),
``writable`` (relax and reject), ``desired`` (loading), ``source`` (a path or app:/path).
"""
