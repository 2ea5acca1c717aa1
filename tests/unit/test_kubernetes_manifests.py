"""The Kubernetes manifests in deploy/kubernetes: valid, locked down, and consistent with the CLI.

Every kustomization is rendered by ``kustomize build`` (or ``kubectl kustomize``) when one is
installed, else by the small renderer below, which knows exactly the kustomize features these
manifests use and refuses any other. Where a binary exists, a test proves that the renderer
gives the same documents, so the fallback is checked too. Every document then validates
against the Kubernetes JSON schemas shipped inside ``kubernetes-validate`` (offline, strict:
unknown fields fail), and the policy tests check what a schema cannot: security contexts,
resources, the init container's command line, the schema ConfigMap's content.

``tests/integration/test_kubernetes_pod.py`` runs the rendered containers on the real engine.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

from sidecar import __version__, schedule
from sidecar.environ import load_settings
from sidecar.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
BASE = KUBE / "base"
NATIVE = KUBE / "overlays" / "native-sidecar"
FROM_IMAGE = KUBE / "overlays" / "schema-from-image"
KUSTOMIZATIONS = {"base": BASE, "native-sidecar": NATIVE, "schema-from-image": FROM_IMAGE}
# Plain manifests applied by hand with `kubectl create -f` (one-off Jobs).
JOB_FILES = sorted((KUBE / "jobs").glob("*.yaml"))
DESIRED_SCHEMA = ROOT / "deploy" / "schema" / "v2" / "schema.sql"
SCHEMA_COPY = BASE / "schema" / "schema.sql"

# The oldest Kubernetes we support (native sidecars are on by default since 1.29) and a
# recent one. kubernetes-validate ships the schemas of each release: nothing is downloaded.
K8S_VERSIONS = ("1.30.0", "1.33.0")
SIDECAR_IMAGE = f"sidecar:{__version__}"
APP_IMAGE = "portfolio-app:1.0"
UID = 10001

Doc = dict[str, Any]


# --- rendering -------------------------------------------------------------------------------


def kustomize_command() -> list[str] | None:
    """``kustomize build`` or ``kubectl kustomize``, whichever is installed (None: neither).

    ``SIDECAR_TEST_NO_KUSTOMIZE=1`` forces the fallback renderer, to try it on purpose.
    """
    if os.environ.get("SIDECAR_TEST_NO_KUSTOMIZE"):
        return None
    if found := shutil.which("kustomize"):
        return [found, "build"]
    if found := shutil.which("kubectl"):
        return [found, "kustomize"]
    return None


def render_with_kustomize(folder: Path, command: list[str]) -> list[Doc]:
    result = subprocess.run(
        [*command, str(folder)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"{' '.join(command)} {folder} failed:\n{result.stderr}"
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def render(folder: Path) -> list[Doc]:
    """The documents of a kustomization, as ``kubectl apply -k`` would send them."""
    command = kustomize_command()
    return render_with_kustomize(folder, command) if command else render_fallback(folder)


def load_yaml(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def render_fallback(folder: Path) -> list[Doc]:
    """A tiny kustomize: resources, configMapGenerator (files) and patches, nothing else."""
    spec = load_yaml(folder / "kustomization.yaml")[0]
    known = {"apiVersion", "kind", "resources", "configMapGenerator", "patches"}
    unknown = set(spec) - known
    if unknown:
        raise NotImplementedError(
            f"{folder}/kustomization.yaml uses {sorted(unknown)}: teach render_fallback"
        )
    docs: list[Doc] = []
    for resource in spec.get("resources", []):
        path = (folder / resource).resolve()
        docs += render_fallback(path) if path.is_dir() else load_yaml(path)
    renames: dict[str, str] = {}
    for generator in spec.get("configMapGenerator", []):
        config_map = _generate_config_map(folder, generator)
        renames[generator["name"]] = config_map["metadata"]["name"]
        docs.append(config_map)
    for doc in docs:
        _rename_config_maps(doc, renames)
    for patch in spec.get("patches", []):
        docs = _apply_patch(folder, patch, docs)
    return docs


def _generate_config_map(folder: Path, generator: Doc) -> Doc:
    unknown = set(generator) - {"name", "files"}
    if unknown:
        raise NotImplementedError(f"configMapGenerator {sorted(unknown)}: teach render_fallback")
    data: dict[str, str] = {}
    for entry in generator["files"]:
        key, _, path = entry.rpartition("=")
        data[key or Path(path).name] = (folder / path).read_text(encoding="utf-8")
    name = generator["name"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-{_kustomize_hash(data)}"},
        "data": data,
    }


def _kustomize_hash(data: dict[str, str]) -> str:
    """kustomize's name suffix (api/hasher): sha256 of Go's json.Marshal of kind, name and
    data; its first 10 hex digits with 0, 1, 3, a, e swapped out so it is never a number.

    kustomize 5 looks the name up as one path element "metadata/name", finds nothing and
    hashes an empty name: so do we (the equality test below catches any change)."""
    encoded = json.dumps(
        {"data": data, "kind": "ConfigMap", "name": ""},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    # Go's encoder escapes these for HTML safety; Python's does not.
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        encoded = encoded.replace(char, escaped)
    encoded = encoded.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    digest = hashlib.sha256(encoded.encode("utf-8")).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def _rename_config_maps(node: Any, renames: dict[str, str]) -> None:
    """Point references (volumes, envFrom, valueFrom) at the generated, suffixed names."""
    if isinstance(node, dict):
        for key, value in node.items():
            if (
                key in ("configMap", "configMapRef", "configMapKeyRef")
                and isinstance(value, dict)
                and value.get("name") in renames
            ):
                value["name"] = renames[value["name"]]
            else:
                _rename_config_maps(value, renames)
    elif isinstance(node, list):
        for item in node:
            _rename_config_maps(item, renames)


def _apply_patch(folder: Path, patch: Doc, docs: list[Doc]) -> list[Doc]:
    body = load_yaml(folder / patch["path"])
    target = patch.get("target")
    if target is not None:
        # A JSON 6902 patch: a list of operations, applied to the target documents.
        matched = [d for d in docs if _matches(d, target["kind"], target["name"])]
        assert matched, f"patch {patch['path']}: no {target['kind']} {target['name']}"
        operations = body[0] if body and isinstance(body[0], list) else body
        for doc in matched:
            for operation in operations:
                _json_patch(doc, operation)
        return docs
    # A strategic merge patch; only the two shapes these overlays need.
    for change in body:
        kind, name = change["kind"], change["metadata"]["name"]
        matched = [d for d in docs if _matches(d, kind, name)]
        assert matched, f"patch {patch['path']}: no {kind} {name}"
        if change.get("$patch") == "delete":
            docs = [d for d in docs if not _matches(d, kind, name)]
        else:
            for doc in matched:
                _merge(doc, change)
    return docs


def _matches(doc: Doc, kind: str, name: str) -> bool:
    return bool(doc.get("kind") == kind and doc.get("metadata", {}).get("name") == name)


def _json_patch(doc: Doc, operation: Doc) -> None:
    op, path = operation["op"], operation["path"]
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if op in ("add", "replace"):
        value = copy.deepcopy(operation["value"])
        if isinstance(node, list):
            if last == "-":
                node.append(value)
            elif op == "add":
                node.insert(int(last), value)
            else:
                node[int(last)] = value
        else:
            node[last] = value
    elif op == "remove":
        del node[int(last) if isinstance(node, list) else last]
    elif op == "test":
        found = node[int(last)] if isinstance(node, list) else node[last]
        assert found == operation["value"], f"JSON patch test {path}: {found!r}"
    else:
        raise NotImplementedError(f"JSON patch op {op!r}: teach render_fallback")


def _merge(base: Doc, change: Doc) -> None:
    for key, value in change.items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        elif isinstance(value, list) and isinstance(base.get(key), list):
            # Strategic merge of lists depends on per-field merge keys: not worth copying.
            raise NotImplementedError(f"strategic merge of list {key!r}: use a JSON patch")
        else:
            base[key] = copy.deepcopy(value)


# --- navigating the documents ----------------------------------------------------------------


def find(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    matches = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"].get("name"))]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def pod_spec(doc: Doc) -> Doc:
    """The pod template's spec of a Deployment, CronJob or Job."""
    job = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    spec: Doc = job["template"]["spec"]
    return spec


def containers_of(spec: Doc) -> list[Doc]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def env_of(container: Doc) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container.get("env", []):
        assert "value" in item, f"{container['name']}: {item['name']} must be a plain value"
        env[item["name"]] = item["value"]
    return env


def settings_of(container: Doc) -> Settings:
    """The sidecar's own settings loader on the container's env: names and values parse."""
    return load_settings(env_of(container))


def mounts_of(spec: Doc, container: Doc) -> dict[str, Doc]:
    """mountPath -> the pod volume mounted there."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    return {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}


def workloads(docs: list[Doc]) -> Iterator[Doc]:
    yield from (d for d in docs if d["kind"] in ("Deployment", "CronJob", "Job"))


def every_rendering() -> Iterator[tuple[str, list[Doc]]]:
    for label, folder in KUSTOMIZATIONS.items():
        yield label, render(folder)
    for path in JOB_FILES:
        yield f"jobs/{path.name}", load_yaml(path)


@pytest.fixture(scope="module")
def renderings() -> dict[str, list[Doc]]:
    return dict(every_rendering())


@pytest.fixture(scope="module")
def base(renderings: dict[str, list[Doc]]) -> list[Doc]:
    return renderings["base"]


@pytest.fixture(scope="module")
def native(renderings: dict[str, list[Doc]]) -> list[Doc]:
    return renderings["native-sidecar"]


@pytest.fixture(scope="module")
def restore_job() -> Doc:
    return find(load_yaml(KUBE / "jobs" / "restore-job.yaml"), "Job")


# --- the tests -------------------------------------------------------------------------------


def test_the_manifests_exist() -> None:
    assert (BASE / "kustomization.yaml").is_file()
    assert (NATIVE / "kustomization.yaml").is_file()
    assert (KUBE / "jobs" / "restore-job.yaml") in JOB_FILES
    assert (KUBE / "README.md").is_file()


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_document_validates_offline(renderings: dict[str, list[Doc]], version: str) -> None:
    assert version.rsplit(".", 1)[0] in {v.rsplit(".", 1)[0] for v in all_versions()}, (
        f"kubernetes-validate ships no schemas for {version}"
    )
    problems = []
    for label, docs in renderings.items():
        assert docs, f"{label} rendered nothing"
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                problems.append(f"{label}: {doc['kind']} {doc['metadata']}: {exc.message}")
    assert not problems, "\n".join(problems)


def test_the_fallback_renderer_matches_kustomize() -> None:
    command = kustomize_command()
    if command is None:
        pytest.skip("no kustomize or kubectl binary: the fallback renderer is what ran")
    for folder in KUSTOMIZATIONS.values():
        by_kustomize = {
            (d["kind"], d["metadata"]["name"]): d for d in render_with_kustomize(folder, command)
        }
        by_fallback = {(d["kind"], d["metadata"]["name"]): d for d in render_fallback(folder)}
        assert by_fallback == by_kustomize, folder


def test_every_pod_is_locked_down(renderings: dict[str, list[Doc]]) -> None:
    """Non-root, read-only root, no capabilities, no privilege escalation, RuntimeDefault
    seccomp, no API token, requests and limits: the Pod Security Standard `restricted` and
    then some. Container settings override the pod's, so the effective value is checked."""
    checked = 0
    for label, docs in renderings.items():
        for workload in workloads(docs):
            spec = pod_spec(workload)
            where = f"{label} {workload['kind']} {workload['metadata']}"
            pod = spec.get("securityContext", {})
            assert spec.get("automountServiceAccountToken") is False, where
            assert pod.get("fsGroup") == UID, where
            assert not any("hostPath" in v for v in spec.get("volumes", [])), where
            for container in containers_of(spec):
                at = f"{where} container {container['name']}"
                own = container.get("securityContext", {})
                effective = {**pod, **own}
                assert effective.get("runAsNonRoot") is True, at
                assert effective.get("runAsUser") == UID, at
                assert effective.get("runAsGroup") == UID, at
                assert effective.get("seccompProfile") == {"type": "RuntimeDefault"}, at
                assert own.get("allowPrivilegeEscalation") is False, at
                assert own.get("readOnlyRootFilesystem") is True, at
                assert own.get("capabilities") == {"drop": ["ALL"]}, at
                assert "privileged" not in own, at
                resources = container.get("resources", {})
                for kind in ("requests", "limits"):
                    assert set(resources.get(kind, {})) >= {"cpu", "memory"}, f"{at}: {kind}"
                # A read-only root needs somewhere to write temporary files.
                assert "emptyDir" in mounts_of(spec, container).get("/tmp", {}), at
                # Plain image names: the registry is the user's choice (kustomize images:).
                # The sidecar's tag is sidecar.__version__: a release bumps it here too.
                assert "/" not in container["image"], at
                assert container["image"] in (SIDECAR_IMAGE, APP_IMAGE), at
                checked += 1
    assert checked >= 6


def test_the_deployment_recreates_its_single_pod(base: list[Doc]) -> None:
    deployment = find(base, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    for claim in (d for d in base if d["kind"] == "PersistentVolumeClaim"):
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"], claim["metadata"]


def test_the_init_container_runs_deploy_on_the_volumes(base: list[Doc]) -> None:
    spec = pod_spec(find(base, "Deployment"))
    deploy = spec["initContainers"][0]
    assert deploy["image"] == SIDECAR_IMAGE
    assert deploy["command"] == ["sidecar"]
    assert deploy["args"] == ["deploy"]
    assert "restartPolicy" not in deploy, "the deploy must finish before the app starts"
    env = env_of(deploy)
    # No Docker socket in a pod, and nothing to restart: the pod's ordering does that.
    assert not {"SIDECAR_APP", "SIDECAR_APP_LABEL", "DOCKER_HOST"} & set(env)
    settings = settings_of(deploy)
    mounts = mounts_of(spec, deploy)
    assert settings.database is not None
    assert settings.schema is not None
    # The database and the backups live on the claims (never in the container's own layer:
    # that is what the sidecar's `database.not_on_volume` warning is about).
    assert "persistentVolumeClaim" in mounts[str(settings.database.parent)]
    assert "persistentVolumeClaim" in mounts[str(settings.backup_dir)]
    assert mounts[str(settings.database.parent)] != mounts[str(settings.backup_dir)]
    assert "configMap" in mounts[str(settings.schema)]
    # The app uses the same database file.
    app = spec["containers"][0]
    app_settings = load_settings(env_of(app))
    assert app_settings.database == settings.database
    assert (
        mounts_of(spec, app)[str(settings.database.parent)] == mounts[str(settings.database.parent)]
    )


def test_the_app_is_probed_on_its_health_endpoint(base: list[Doc]) -> None:
    app = pod_spec(find(base, "Deployment"))["containers"][0]
    assert app["image"] == APP_IMAGE
    ports = {p["name"]: p["containerPort"] for p in app["ports"]}
    assert ports == {"http": 3000}
    for probe in ("readinessProbe", "livenessProbe"):
        assert app[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    service = find(base, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_the_schema_config_map_is_the_desired_schema(base: list[Doc]) -> None:
    assert DESIRED_SCHEMA.is_file(), (
        f"{DESIRED_SCHEMA.relative_to(ROOT)} is missing: the manifests ship a copy of it"
    )
    desired = DESIRED_SCHEMA.read_text(encoding="utf-8")
    # kustomize reads only files under the kustomization: the base keeps a copy.
    assert SCHEMA_COPY.read_text(encoding="utf-8") == desired, (
        f"{SCHEMA_COPY.relative_to(ROOT)} differs from {DESIRED_SCHEMA.relative_to(ROOT)}: "
        f"cp {DESIRED_SCHEMA.relative_to(ROOT)} {SCHEMA_COPY.relative_to(ROOT)}"
    )
    config_map = find(base, "ConfigMap")
    assert config_map["data"] == {"schema.sql": desired}
    spec = pod_spec(find(base, "Deployment"))
    schema_volume = mounts_of(spec, spec["initContainers"][0])["/schema"]
    assert schema_volume["configMap"]["name"] == config_map["metadata"]["name"]


def test_a_configmap_mount_is_a_schema_folder(base: list[Doc], tmp_path: Path) -> None:
    """The kubelet mounts a ConfigMap as symlinks into a hidden, timestamped folder
    (``schema.sql -> ..data/schema.sql``, ``..data -> ..2024_01_01_00_00_00.1``): the schema
    loader must read that folder as exactly the ConfigMap's files."""
    from sidecar.schema.desired import load_desired

    data = find(base, "ConfigMap")["data"]
    mount = tmp_path / "schema"
    write_config_map_mount(mount, data)
    loaded = load_desired(mount)
    single = tmp_path / "schema.sql"
    single.write_text(data["schema.sql"], encoding="utf-8")
    assert loaded == load_desired(single)


def write_config_map_mount(mount: Path, data: dict[str, str]) -> None:
    """What the kubelet's atomic writer makes of a ConfigMap volume."""
    revision = mount / "..2024_01_01_00_00_00.000000001"
    revision.mkdir(parents=True)
    for key, value in data.items():
        (revision / key).write_text(value, encoding="utf-8")
    (mount / "..data").symlink_to(revision.name)
    for key in data:
        (mount / key).symlink_to(f"..data/{key}")


def test_the_backup_cronjob(base: list[Doc]) -> None:
    cronjob = find(base, "CronJob")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    spec = pod_spec(cronjob)
    (backup,) = spec["containers"]
    assert backup["image"] == SIDECAR_IMAGE
    assert backup["command"] == ["sidecar"]
    assert backup["args"][0] == "backup"
    deploy_spec = pod_spec(find(base, "Deployment"))
    assert_same_storage(deploy_spec, deploy_spec["initContainers"][0], spec, backup)
    # ReadWriteOnce: the backup pod must run where the app's pod has the claims mounted.
    (term,) = spec["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    app_labels = find(base, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert term["labelSelector"]["matchLabels"].items() <= app_labels.items()


def assert_same_storage(spec_a: Doc, container_a: Doc, spec_b: Doc, container_b: Doc) -> None:
    """Same database, backups folder, naming and retention, on the same claims."""
    a, b = settings_of(container_a), settings_of(container_b)
    for field in ("database", "backup_dir", "environment", "keep"):
        assert getattr(a, field) == getattr(b, field), f"{container_b['name']}: {field}"
    assert a.database is not None
    mounts_a, mounts_b = mounts_of(spec_a, container_a), mounts_of(spec_b, container_b)
    for path in (str(a.database.parent), str(a.backup_dir)):
        claim_a = mounts_a[path]["persistentVolumeClaim"]["claimName"]
        claim_b = mounts_b[path]["persistentVolumeClaim"]["claimName"]
        assert claim_a == claim_b, f"{container_b['name']}: {path}"


def test_the_native_sidecar_overlay(native: list[Doc]) -> None:
    assert not [d for d in native if d["kind"] == "CronJob"], "one scheduler, not two"
    spec = pod_spec(find(native, "Deployment"))
    deploy, backups = spec["initContainers"]
    # Order matters: the deploy finishes before the scheduled backups start.
    assert (deploy["name"], deploy["args"]) == ("deploy", ["deploy"])
    assert backups["restartPolicy"] == "Always"
    assert backups["image"] == SIDECAR_IMAGE
    assert backups["command"] == ["sidecar"]
    assert backups["args"][0] == "backup"
    settings = settings_of(backups)
    assert settings.schedule
    schedule.validate(settings.schedule)
    assert_same_storage(spec, deploy, spec, backups)
    probe = backups["livenessProbe"]["exec"]["command"]
    assert probe == ["sidecar", "health", "--backups-only"]


def test_the_schema_from_image_overlay(renderings: dict[str, list[Doc]], tmp_path: Path) -> None:
    """The app's own image copies its migrations folder into an emptyDir before the deploy
    reads it: the same folder, in the same order, as Compose's app:/app/prisma/migrations."""
    spec = pod_spec(find(renderings["schema-from-image"], "Deployment"))
    copy_step, deploy = spec["initContainers"]
    assert copy_step["image"] == APP_IMAGE == spec["containers"][0]["image"]
    assert "restartPolicy" not in copy_step, "it must finish before the deploy starts"
    assert deploy["args"] == ["deploy"]
    settings = settings_of(deploy)
    assert settings.schema is not None
    shared = mounts_of(spec, deploy)[str(settings.schema)]
    assert "emptyDir" in shared
    assert mounts_of(spec, copy_step)["/schema"] == shared
    # What the copy does, run here on the demo app's folder: a schema the sidecar loads.
    command = copy_step["command"]
    assert command[:2] == ["cp", "-R"]
    source = command[2].removesuffix("/.")
    assert source == "/app/prisma/migrations"
    (tmp_path / "schema").mkdir()
    folder = ROOT / "deploy/demo-app/prisma/migrations"
    subprocess.run(["cp", "-R", f"{folder}/.", f"{tmp_path}/schema/"], check=True)
    from sidecar.schema.desired import load_desired
    from sidecar.schema.diff import make_plan

    copied = load_desired(tmp_path / "schema")
    # Its end state is deploy/schema/v2: planned from one to the other, nothing differs.
    plan = make_plan(load_desired(DESIRED_SCHEMA.parent), copied, row_counts={})
    assert [*plan.operations, *plan.drift, *plan.refused] == []


def test_the_restore_job(base: list[Doc], restore_job: Doc) -> None:
    assert restore_job["metadata"]["generateName"]
    assert restore_job["spec"]["backoffLimit"] == 0, "a restore is never retried blindly"
    spec = pod_spec(restore_job)
    assert spec["restartPolicy"] == "Never"
    (restore,) = spec["containers"]
    assert restore["command"] == ["sidecar"]
    assert restore["args"] == ["restore", "latest"]
    deploy_spec = pod_spec(find(base, "Deployment"))
    assert_same_storage(deploy_spec, deploy_spec["initContainers"][0], spec, restore)


def test_the_list_job_reads_the_backups_only() -> None:
    job = find(load_yaml(KUBE / "jobs" / "list-backups-job.yaml"), "Job")
    spec = pod_spec(job)
    (lister,) = spec["containers"]
    assert lister["args"] == ["list"]
    settings = settings_of(lister)
    mount = next(m for m in lister["volumeMounts"] if m["mountPath"] == str(settings.backup_dir))
    assert mount["readOnly"] is True


def test_offsite_credentials_come_from_a_secret(base: list[Doc], native: list[Doc]) -> None:
    """The CronJob and the native sidecar take SIDECAR_OFFSITE and the AWS_* credentials
    from the optional Secret `portfolio-offsite`; no credential is written in a manifest."""
    backup = pod_spec(find(base, "CronJob"))["containers"][0]
    sidecar = pod_spec(find(native, "Deployment"))["initContainers"][1]
    for container in (backup, sidecar):
        assert {"secretRef": {"name": "portfolio-offsite", "optional": True}} in container[
            "envFrom"
        ], container["name"]
        names = {e["name"] for e in container.get("env", [])}
        assert not names & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}, container["name"]
    volume = mounts_of(pod_spec(find(native, "Deployment")), sidecar)["/run/secrets/offsite-age"]
    assert volume["secret"] == {
        "secretName": "portfolio-offsite-age",
        "optional": True,
        "defaultMode": 0o400,
    }
