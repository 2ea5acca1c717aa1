"""What the deploy's preflight gathers before the preview: the app, the desired schema (a
local path, or a folder in the app's image), the user's health queries, and the warning for a
database that is not on a mounted volume.
"""

from __future__ import annotations

import os
from pathlib import Path

from sidecar import health
from sidecar.containers.apps import AppRef, Apps
from sidecar.errors import UnavailableError
from sidecar.logs import get_logger
from sidecar.migrate.apply import Guard
from sidecar.migrate.preview import Preview, read_preview
from sidecar.pipeline.report import DeployReport
from sidecar.schema.catalogue import Catalogue
from sidecar.schema.source import load_desired, parse
from sidecar.settings import Settings

log = get_logger(__name__)


def desired_schema(settings: Settings, apps: Apps | None, app: AppRef | None) -> Catalogue:
    """The desired schema: a local path, or a folder in the app's image (``app:/path``)."""
    spec = settings.require_schema()
    source = parse(str(spec))
    if source is not None and apps is None:
        raise UnavailableError(
            f"SIDECAR_SCHEMA {spec} is read from a container, and no Docker API is reachable",
            hint="mount the Docker socket (or a socket proxy), or point SIDECAR_SCHEMA at a "
            "local folder (in Kubernetes: an emptyDir an init container fills)",
        )
    found = app if source is not None and source.container == settings.app else None
    return load_desired(spec, apps, found=found)


def health_guards(settings: Settings) -> list[Guard]:
    if settings.health_queries is None:
        return []
    queries = health.load_queries(settings.health_queries)
    return [health.queries_guard(queries)] if queries else []


def find_app(settings: Settings, apps: Apps | None, report: DeployReport) -> AppRef | None:
    if not (settings.app or settings.app_label):
        log.info("restart.skipped", reason="no app configured (SIDECAR_APP / SIDECAR_APP_LABEL)")
        return None
    if apps is None:
        log.info("restart.skipped", reason="no Docker API reachable")
        return None
    app = apps.find(settings.app, label=settings.app_label)
    report.app = app.name
    return app


def volume_warnings(db: Path) -> list[str]:
    """Warn when, inside a container, the database is not on a mounted volume: it would be
    baked into the container's own layer and lost whenever the container is replaced."""
    if not in_container():
        return []
    folder = db.parent if db.parent.exists() else Path("/")
    if mount_point(folder) != "/":
        return []
    log.warning(
        "database.not_on_volume",
        database=str(db),
        hint="mount a volume (or a PersistentVolumeClaim) at the database's folder",
    )
    return [f"{db} is not on a mounted volume: its data is lost when the container is replaced"]


def in_container() -> bool:
    return (
        Path("/.dockerenv").exists()
        or Path("/run/.containerenv").exists()
        or "KUBERNETES_SERVICE_HOST" in os.environ
    )


def mount_point(path: Path, mountinfo: str | None = None) -> str:
    """The mount point that holds ``path``, from /proc/self/mountinfo (longest prefix)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return "?"
    target = str(path.resolve())
    best = "/"
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best = point
    return best


def settings_preview(
    settings: Settings, db: Path, desired: Catalogue, *, for_deploy: bool
) -> Preview:
    """:func:`~sidecar.migrate.preview.read_preview` with the values it takes from the
    settings (for ``plan`` and the deploy's preflight alike)."""
    return read_preview(
        db,
        desired,
        for_deploy=for_deploy,
        wait_timeout=settings.wait_timeout,
        renames=settings.renames,
        not_renamed=settings.not_renamed,
        backup_dir=settings.backup_dir,
        allow_fresh=settings.allow_fresh,
    )
