"""The deploy pipeline, a row of named steps (:func:`sidecar.pipeline.run.run_deploy`): the
run itself (``run``), what the preflight gathers (``preflight``), the steps after the change
(``after``) and the report (``report``). Callers import the submodule they use.
"""
