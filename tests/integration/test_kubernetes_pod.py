"""The pod contract on the real Docker engine: the containers of deploy/kubernetes, as rendered,
really work with the images.

There is no cluster here, so each test plays the kubelet. It takes a container from the
rendered manifests (image, command, args, env, volume mounts, security context, memory and CPU
limits) and runs it with Docker:

- a **PersistentVolumeClaim** becomes a Docker volume. Kubernetes makes a fresh claim
  writable for the pod through ``fsGroup`` (group ownership, group rw, setgid); a fresh Docker
  volume is root's, so :func:`apply_fs_group` does the same with a short-lived root container
  first. Mounts never copy the image's content into the volume (``no_copy``): a claim does
  not get that either;
- a **ConfigMap** becomes a read-only Docker volume laid out as the kubelet's atomic writer
  lays it out (``schema.sql -> ..data/schema.sql``, ``..data -> ..<timestamp>``);
- an **emptyDir** becomes a tmpfs; ``runAsUser``/``runAsGroup``/``fsGroup`` become the user
  and a supplementary group; ``readOnlyRootFilesystem`` a read-only root;
  ``capabilities.drop: [ALL]`` and ``allowPrivilegeEscalation: false`` the same in Docker;
- there is no Docker socket in any container, as in a pod.

Probes run inside the container (``docker exec``): the host never sends traffic anywhere.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from docker.types import Mount

from tests.conftest import DEMO_IMAGE, DEMO_V2_IMAGE, SIDECAR_IMAGE, TEST_LABEL
from tests.unit.test_kubernetes_manifests import (
    APP_IMAGE,
    BASE,
    FROM_IMAGE,
    KUBE,
    NATIVE,
    UID,
    Doc,
    env_of,
    find,
    load_yaml,
    pod_spec,
    render,
)
from tests.unit.test_kubernetes_manifests import SIDECAR_IMAGE as MANIFEST_SIDECAR_IMAGE

pytestmark = pytest.mark.integration

# The manifests' image names -> the images scripts/setup built here.
IMAGES = {MANIFEST_SIDECAR_IMAGE: SIDECAR_IMAGE, APP_IMAGE: DEMO_IMAGE}
DEPLOY_TIMEOUT = 180


# --- playing the kubelet ---------------------------------------------------------------------


class Pod:
    """The storage of one pod on the Docker engine, and its containers from a pod spec."""

    def __init__(
        self,
        docker_client: Any,
        volumes: Callable[[str], str],
        spec: Doc,
        *,
        claims_of: Pod | None = None,
    ) -> None:
        """Fresh claims, or (``claims_of``) the claims of another pod: a CronJob's or a Job's
        pod mounting the app's claims."""
        self.client = docker_client
        self.spec = spec
        self.claims: dict[str, str] = {} if claims_of is None else claims_of.claims
        self.volumes: dict[str, str] = {}  # pod volume name -> Docker volume
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" not in volume:
                continue
            claim = volume["persistentVolumeClaim"]["claimName"]
            if claim not in self.claims:
                assert claims_of is None, f"{claim} is not a claim of the app's pod"
                self.claims[claim] = volumes(claim)
                apply_fs_group(docker_client, self.claims[claim], spec)
            self.volumes[volume["name"]] = self.claims[claim]

    def add_config_map(self, volumes: Callable[[str], str], config_map: Doc) -> None:
        """Back the pod's volume of this (rendered) ConfigMap with a Docker volume."""
        for volume in self.spec.get("volumes", []):
            ref = volume.get("configMap", {}).get("name")
            if ref == config_map["metadata"]["name"]:
                name = volumes("configmap")
                write_config_map(self.client, name, config_map["data"])
                self.volumes[volume["name"]] = name

    def share_empty_dir(self, volumes: Callable[[str], str], name: str) -> None:
        """Back the emptyDir ``name`` with one Docker volume for every container of the pod
        (as Kubernetes does; by default each container gets its own tmpfs)."""
        assert any(v["name"] == name and "emptyDir" in v for v in self.spec["volumes"]), name
        self.volumes[name] = volumes(f"emptydir-{name}-{uuid.uuid4().hex[:6]}")  # per pod
        apply_fs_group(self.client, self.volumes[name], self.spec)

    def container(self, name: str) -> Doc:
        everyone: list[Doc] = [*self.spec.get("initContainers", []), *self.spec["containers"]]
        (found,) = (c for c in everyone if c["name"] == name)
        return found

    def run_kwargs(
        self,
        container: Doc,
        *,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        skip_mounts: tuple[str, ...] = (),
        read_only: bool | None = None,
    ) -> dict[str, Any]:
        """``docker run`` arguments for a container of this pod, from its manifest."""
        pod_security = self.spec.get("securityContext", {})
        security = {**pod_security, **container.get("securityContext", {})}
        assert security["runAsNonRoot"] is True
        pod_volumes = {v["name"]: v for v in self.spec.get("volumes", [])}
        mounts = []
        for mount in container.get("volumeMounts", []):
            if mount["mountPath"] in skip_mounts:
                continue
            volume = pod_volumes[mount["name"]]
            if "emptyDir" in volume and mount["name"] not in self.volumes:
                mounts.append(Mount(mount["mountPath"], None, type="tmpfs"))
            elif volume.get("secret", {}).get("optional"):
                # An optional Secret that does not exist mounts as an empty folder.
                mounts.append(Mount(mount["mountPath"], None, type="tmpfs", read_only=True))
            else:
                mounts.append(
                    Mount(
                        mount["mountPath"],
                        self.volumes[mount["name"]],
                        type="volume",
                        read_only=bool(mount.get("readOnly", False)),
                        no_copy=True,
                    )
                )
        limits = container["resources"]["limits"]
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["allowPrivilegeEscalation"] is False
        return {
            "image": IMAGES[container["image"]],
            "entrypoint": container.get("command"),
            "command": args if args is not None else container.get("args"),
            "environment": {**env_of(container), **(env or {})},
            "user": f"{security['runAsUser']}:{security['runAsGroup']}",
            "group_add": [str(pod_security["fsGroup"])],
            "read_only": security["readOnlyRootFilesystem"] if read_only is None else read_only,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "mem_limit": quantity_bytes(limits["memory"]),
            # A limit caps usage, as in Kubernetes; Docker refuses one above the host's CPUs.
            "nano_cpus": int(min(quantity_cpus(limits["cpu"]), os.cpu_count() or 1) * 1e9),
            "mounts": mounts,
        }


def apply_fs_group(docker_client: Any, volume: str, spec: Doc) -> None:
    """What the kubelet does to a fresh claim for ``fsGroup``: group-own it, group rw, setgid."""
    group = spec["securityContext"]["fsGroup"]
    docker_client.containers.run(
        SIDECAR_IMAGE,
        ["-c", f"chgrp -R {group} /v && chmod -R g+rwX /v && chmod g+s /v"],
        entrypoint=["sh"],
        user="0:0",
        mounts=[Mount("/v", volume, type="volume", no_copy=True)],
        labels={TEST_LABEL: "1"},
        remove=True,
    )


def write_config_map(docker_client: Any, volume: str, data: dict[str, str]) -> None:
    """A ConfigMap volume as the kubelet writes it: the files in a hidden, timestamped folder,
    ``..data`` pointing at it, and one symlink per key. Root's, mode 0644 (defaultMode)."""
    revision = "..2024_01_01_00_00_00.000000001"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        folder = tarfile.TarInfo(revision)
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        for key, value in data.items():
            content = value.encode("utf-8")
            info = tarfile.TarInfo(f"{revision}/{key}")
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))
        links = {"..data": revision, **{key: f"..data/{key}" for key in data}}
        for name, target in links.items():
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.SYMTYPE, target
            tar.addfile(link)
    holder = docker_client.containers.create(
        SIDECAR_IMAGE,
        mounts=[Mount("/cm", volume, type="volume", no_copy=True)],
        labels={TEST_LABEL: "1"},
    )
    try:
        assert holder.put_archive("/cm", buffer.getvalue())
    finally:
        holder.remove(force=True)


def quantity_bytes(value: str) -> int:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return int(value[: -len(suffix)]) * factor
    return int(value)


def quantity_cpus(value: str) -> float:
    return int(value[:-1]) / 1000 if value.endswith("m") else float(value)


def run_to_exit(containers: Callable[..., Any], kwargs: dict[str, Any]) -> tuple[int, Any]:
    container = containers(**kwargs)
    status = container.wait(timeout=DEPLOY_TIMEOUT)
    return int(status["StatusCode"]), container


def events(container: Any) -> list[dict[str, Any]]:
    """The structlog JSON events a container wrote (stderr)."""
    found = []
    for line in container.logs(stdout=False, stderr=True).decode("utf-8", "replace").splitlines():
        if line.startswith("{"):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and "event" in event:
                found.append(event)
    return found


def named(found: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in found if e["event"] == name]


def output(container: Any) -> str:
    return str(container.logs(stdout=True, stderr=True).decode("utf-8", "replace"))


def stdout_json(container: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(container.logs(stdout=True, stderr=False))
    return document


def probe(container: Any, manifest: Doc, kind: str) -> bool:
    """Run the manifest's httpGet or exec probe inside the container (loopback only)."""
    spec = manifest[kind]
    if "exec" in spec:
        code, _ = container.exec_run(spec["exec"]["command"])
        return bool(code == 0)
    get = spec["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in manifest.get("ports", [])}
    port = ports.get(get["port"], get["port"])
    script = (
        "import sys, urllib.request\n"
        f"url = 'http://127.0.0.1:{port}{get['path']}'\n"
        "try:\n"
        "    sys.exit(0 if urllib.request.urlopen(url, timeout=2).status == 200 else 1)\n"
        "except Exception:\n"
        "    sys.exit(1)\n"
    )
    code, _ = container.exec_run(["python3", "-c", script])
    return bool(code == 0)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def committed(app: Any) -> list[int]:
    lines = app.logs(stdout=True, stderr=False).decode("utf-8", "replace").splitlines()
    return [json.loads(line)["id"] for line in lines if '"committed"' in line]


def start_app(containers: Callable[..., Any], pod: Pod) -> Any:
    """The app container, running until its readiness probe passes and it has committed."""
    manifest = pod.container("app")
    app = containers(**pod.run_kwargs(manifest))
    wait_for(lambda: probe(app, manifest, "readinessProbe"), 60, "the app's readiness probe")
    wait_for(lambda: len(committed(app)) >= 20, 60, "20 committed rows")
    assert probe(app, manifest, "livenessProbe")
    return app


def stop(container: Any, spec: Doc) -> int:
    """SIGTERM, then SIGKILL after the pod's grace period, as the kubelet stops a pod."""
    container.stop(timeout=spec.get("terminationGracePeriodSeconds", 30))
    return int(container.wait(timeout=60)["StatusCode"])


@pytest.fixture(scope="module")
def base_docs() -> list[Doc]:
    return render(BASE)


@pytest.fixture
def app_pod(docker_client: Any, volumes: Callable[[str], str], base_docs: list[Doc]) -> Pod:
    pod = Pod(docker_client, volumes, pod_spec(find(base_docs, "Deployment")))
    pod.add_config_map(volumes, find(base_docs, "ConfigMap"))
    return pod


# --- the tests -------------------------------------------------------------------------------


def test_the_pod_lifecycle(
    docker_client: Any,
    volumes: Callable[[str], str],
    containers: Callable[..., Any],
    base_docs: list[Doc],
    app_pod: Pod,
) -> None:
    deploy = app_pod.container("deploy")

    # 1. First start on empty claims: the init container creates the database from the
    #    schema, exits 0, and skips the restart (no app configured, no Docker socket).
    code, first = run_to_exit(containers, app_pod.run_kwargs(deploy))
    assert code == 0, output(first)
    found = events(first)
    assert named(found, "restart.skipped"), output(first)
    (done,) = named(found, "deploy.done")
    assert done["fresh"] is True
    assert done["changed"] is True
    assert not named(found, "database.not_on_volume"), "the database is on the claim"

    # 2. The app starts on the migrated database, passes its probes and commits rows.
    app = start_app(containers, app_pod)
    assert stop(app, app_pod.spec) == 0
    rows = committed(app)

    # 3. The next pod start: the init container finds nothing to do and exits 0.
    code, again = run_to_exit(containers, app_pod.run_kwargs(deploy))
    assert code == 0, output(again)
    (done,) = named(events(again), "deploy.done")
    assert done["changed"] is False
    assert done["backup"] is None
    assert named(events(again), "restart.skipped")

    # 4. The CronJob's container, on the same claims: a verified backup.
    cron_pod = Pod(docker_client, volumes, pod_spec(find(base_docs, "CronJob")), claims_of=app_pod)
    code, cron = run_to_exit(containers, cron_pod.run_kwargs(cron_pod.container("backup")))
    assert code == 0, output(cron)
    listing = list_backups(docker_client, volumes, containers, app_pod)
    (backup,) = listing["backups"]
    assert backup["id"].startswith("portfolio_backup_production_")
    assert backup["verified"] is True
    assert backup["reason"] == "scheduled"

    # 5. The restore Job, with the app scaled to 0: restores, keeps a pre-restore backup.
    job = find(load_yaml(KUBE / "jobs" / "restore-job.yaml"), "Job")
    restore_pod = Pod(docker_client, volumes, pod_spec(job), claims_of=app_pod)
    code, restored = run_to_exit(
        containers, restore_pod.run_kwargs(restore_pod.container("restore"))
    )
    assert code == 0, output(restored)
    (event,) = named(events(restored), "backup.restored")
    assert event["id"] == backup["id"]
    assert event["safety_backup"]
    ids = {b["id"] for b in list_backups(docker_client, volumes, containers, app_pod)["backups"]}
    assert ids == {backup["id"], event["safety_backup"]}

    # 6. The app's next start: nothing to do, and every row the app committed is there.
    code, after = run_to_exit(containers, app_pod.run_kwargs(deploy))
    assert code == 0, output(after)
    assert named(events(after), "deploy.done")[0]["changed"] is False
    code, health = run_to_exit(containers, app_pod.run_kwargs(deploy, args=["health", "--json"]))
    assert code == 0, output(health)
    assert stdout_json(health)["row_counts"]["Transaction"] >= len(rows) > 0


def list_backups(
    docker_client: Any, volumes: Callable[[str], str], containers: Callable[..., Any], app_pod: Pod
) -> dict[str, Any]:
    """The list-backups Job's container, with --json: read-only on the backups claim."""
    job = find(load_yaml(KUBE / "jobs" / "list-backups-job.yaml"), "Job")
    pod = Pod(docker_client, volumes, pod_spec(job), claims_of=app_pod)
    lister = pod.container("list")
    code, listed = run_to_exit(containers, pod.run_kwargs(lister, args=[*lister["args"], "--json"]))
    assert code == 0, output(listed)
    return stdout_json(listed)


def test_two_init_containers_at_once_one_waits_for_the_lease(
    containers: Callable[..., Any], app_pod: Pod
) -> None:
    deploy = app_pod.container("deploy")
    # The previous release ran: the app made its (v1) database. The rollout's two pods race
    # to bring it to the manifest's schema (v2).
    stop(start_app(containers, app_pod), app_pod.spec)
    # A longer quiet period keeps the holder inside the lease for a while, so that the two
    # overlap however the engine schedules their starts.
    slow = {"SIDECAR_QUIET_PERIOD": "4s"}
    racers = [containers(**app_pod.run_kwargs(deploy, env=slow)) for _ in range(2)]
    codes = [int(r.wait(timeout=DEPLOY_TIMEOUT)["StatusCode"]) for r in racers]
    assert codes == [0, 0], [output(r) for r in racers]
    waited = [r for r in racers if named(events(r), "lease.waiting")]
    assert len(waited) == 1, [output(r) for r in racers]
    changed = sorted(named(events(r), "deploy.done")[0]["changed"] for r in racers)
    assert changed == [False, True], [output(r) for r in racers]


def test_the_native_sidecar_backs_up_beside_the_app(
    docker_client: Any, volumes: Callable[[str], str], containers: Callable[..., Any]
) -> None:
    docs = render(NATIVE)
    pod = Pod(docker_client, volumes, pod_spec(find(docs, "Deployment")))
    pod.add_config_map(volumes, find(docs, "ConfigMap"))
    # The kubelet's order: the deploy to completion, then the sidecar, then the app.
    code, deployed = run_to_exit(containers, pod.run_kwargs(pod.container("deploy")))
    assert code == 0, output(deployed)
    manifest = pod.container("backups")
    backups = containers(**pod.run_kwargs(manifest))
    app = start_app(containers, pod)
    # One backup at start, while the app writes; then it waits for the next slot.
    wait_for(lambda: bool(named(events(backups), "backup.created")), 120, "the first backup")
    backups.reload()
    assert backups.status == "running", output(backups)
    assert probe(backups, manifest, "livenessProbe"), output(backups)
    assert stop(backups, pod.spec) == 0, output(backups)
    assert stop(app, pod.spec) == 0


def test_a_database_outside_any_volume_is_warned_about(
    containers: Callable[..., Any], app_pod: Pod
) -> None:
    """The claim forgotten (or the path wrong): the file lands in the container's own layer
    and dies with it. The deploy works, and says so loudly."""
    deploy = app_pod.container("deploy")
    kwargs = app_pod.run_kwargs(deploy, skip_mounts=("/app/data",), read_only=False)
    code, container = run_to_exit(containers, kwargs)
    assert code == 0, output(container)
    (warning,) = named(events(container), "database.not_on_volume")
    assert warning["database"] == "/app/data/portfolio.db"
    assert warning["level"] == "warning"


def test_the_images_run_as_the_manifests_user(docker_client: Any) -> None:
    """runAsUser 10001 is the user both images are built with: their files are its own."""
    for image in (SIDECAR_IMAGE, DEMO_IMAGE):
        uid = docker_client.containers.run(
            image, ["-u"], entrypoint=["id"], labels={TEST_LABEL: "1"}, remove=True
        )
        assert int(uid.decode().strip()) == UID, image


def test_the_schema_from_image_overlay_releases_v1_then_v2(
    docker_client: Any, volumes: Callable[[str], str], containers: Callable[..., Any]
) -> None:
    """overlays/schema-from-image: the app's own image copies its migrations folder into an
    emptyDir, the deploy reads it there, the app starts. A release is the next image."""
    spec = pod_spec(find(render(FROM_IMAGE), "Deployment"))
    first = Pod(docker_client, volumes, spec)
    start_pod_on(volumes, containers, first, DEMO_IMAGE, fresh=True)
    second = Pod(docker_client, volumes, spec, claims_of=first)
    start_pod_on(volumes, containers, second, DEMO_V2_IMAGE, fresh=False)
    # The v2 release took a backup of v1's database first.
    listing = list_backups(docker_client, volumes, containers, first)
    assert [b["reason"] for b in listing["backups"]] == ["deploy"]


def start_pod_on(
    volumes: Callable[[str], str],
    containers: Callable[..., Any],
    pod: Pod,
    image: str,
    *,
    fresh: bool,
) -> None:
    """The pod's three containers in order, the app's image being ``image``: the copy of its
    migrations folder, the deploy (a change: creating or migrating), the app up and writing."""
    pod.share_empty_dir(volumes, "schema")
    code, copied = run_to_exit(containers, {**pod.run_kwargs(pod.container("schema")),
                                            "image": image})  # fmt: skip
    assert code == 0, output(copied)
    code, deployed = run_to_exit(containers, pod.run_kwargs(pod.container("deploy")))
    assert code == 0, output(deployed)
    (done,) = named(events(deployed), "deploy.done")
    assert done["changed"] is True
    assert done["fresh"] is fresh
    manifest = pod.container("app")
    app = containers(**{**pod.run_kwargs(manifest), "image": image})
    wait_for(lambda: probe(app, manifest, "readinessProbe"), 60, f"{image} ready")
    wait_for(lambda: len(committed(app)) >= 5, 60, "5 committed rows")
    assert stop(app, pod.spec) == 0
