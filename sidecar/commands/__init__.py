"""One typed function per subcommand: orchestration only, the work lives in the library.

Each function takes the :class:`~sidecar.settings.Settings` plus keyword-only options and
returns a :class:`~sidecar.report.Result`; failures raise :class:`~sidecar.errors.SidecarError`.
"""
