"""Release benchmark: the demo's v1 -> v2 release end to end, as its users see it.

    .venv/bin/python bench/release_bench.py              # 3 runs of each layout
    .venv/bin/python bench/release_bench.py --runs 5

Two ways to release, each on a fresh Compose project of the repository's docker-compose.yml
(unique ``-p`` name, the demo app published on a free 127.0.0.1 port), v1 up, healthy and
writing first:

- ``up -d``: the release layout. ``DEMO_IMAGE=<v2> docker compose up -d``: Compose stops the
  old app, the sidecar backs up and migrates, Compose starts the v2 app.
- ``run, then up -d``: migrate before swapping the code. ``docker compose run --rm sidecar
  deploy`` with the v2 schema mounted, while v1 runs (lull, lock, backup, change; with
  ``--restart never`` as the README says, unless ``--restart-v1``: then v1 is restarted
  after the change, a second outage), then ``DEMO_IMAGE=<v2> docker compose up -d`` (the
  sidecar has nothing to do).
- ``run, then up -d --no-deps app``: the same migration first, then the code swap alone
  (Compose does not run the sidecar again: nothing checks the image's schema at the swap).
- ``up -d, no-op dependency (floor)``: not a release but its floor: v1 replaced by v1 with
  ``up -d --force-recreate app`` while the ``sidecar`` service is a one-shot that exits at
  once (``true``, from a Compose override). The same outage as ``up -d`` with a dependency
  that costs nothing: what Compose and the engine take alone.

An HTTP probe (GET /health on the published port, 1 s timeout) runs every 50 ms from before
the release to its end. Reported: the release's wall time (from the first command to the v2
app healthy by Docker's HEALTHCHECK), the downtime users see (each outage: first failed
probe to the first good one after it; summed), the deploy's own ``seconds`` (its
``deploy.done`` event) and the app's start (its container's StartedAt to healthy, as probed).
The project is removed (``down -v``) after each run, also on failure. Nothing asserts timings.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
SIDECAR_IMAGE = os.environ.get("SIDECAR_IMAGE", "sidecar:local")
DEMO_IMAGE = os.environ.get("DEMO_IMAGE", "sidecar-demo-app:local")
DEMO_V2_IMAGE = os.environ.get("DEMO_V2_IMAGE", f"{DEMO_IMAGE}-v2")
PROBE_EVERY = 0.05


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Probe:
    """GET /health every 50 ms; every (wall-clock time, ok) result (wall clock: it lines up
    with Docker's StartedAt/FinishedAt)."""

    port: int
    results: list[tuple[float, bool]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        url = f"http://127.0.0.1:{self.port}/health"
        while not self._stop.is_set():
            started = time.time()
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    ok = response.status == 200
            except OSError:
                ok = False
            self.results.append((started, ok))
            self._stop.wait(max(0.0, PROBE_EVERY - (time.time() - started)))

    def outages(self, since: float) -> list[tuple[float, float]]:
        """(first failed probe, first good probe after it) for each outage after ``since``."""
        found: list[tuple[float, float]] = []
        down: float | None = None
        for at, ok in self.results:
            if at < since:
                continue
            if not ok and down is None:
                down = at
            elif ok and down is not None:
                found.append((down, at))
                down = None
        if down is not None:
            found.append((down, float("nan")))
        return found


NOOP_DEPENDENCY = """services:
  sidecar:
    entrypoint: ["true"]
    command: []
"""


class Project:
    def __init__(self) -> None:
        self.name = f"sidecarbench{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.image = DEMO_IMAGE
        self.files = [str(ROOT / "docker-compose.yml")]
        self.scratch: Path | None = None  # a folder of override files, removed at the end

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "SIDECAR_IMAGE": SIDECAR_IMAGE,
            "DEMO_IMAGE": self.image,
            "DEMO_HTTP_PORT": str(self.port),
            "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
        }
        files = [arg for path in self.files for arg in ("-f", path)]
        argv = ["docker", "compose", "--project-directory", str(ROOT), "-p", self.name,
                *files, *args]  # fmt: skip
        result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def inspect(self, service: str, template: str) -> str:
        ids = self.compose("ps", "-aq", service).stdout.split()
        out = subprocess.run(["docker", "inspect", "-f", template, *ids],
                             capture_output=True, text=True, check=True)  # fmt: skip
        return out.stdout.strip()

    def wait_healthy(self, timeout: float = 180) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.inspect("app", "{{.Config.Image}} {{.State.Health.Status}}")
            if state == f"{self.image} healthy":
                return time.time()
            time.sleep(0.1)
        raise RuntimeError(f"the app is not healthy on {self.image} after {timeout:g}s")

    def times(self, service: str) -> tuple[float, float]:
        """The service container's StartedAt and FinishedAt, as Unix times."""
        raw = self.inspect(service, "{{.State.StartedAt}} {{.State.FinishedAt}}").split()
        return _unix(raw[0]), _unix(raw[1])

    def deploy_seconds(self, output: str) -> float | None:
        for line in reversed(output.splitlines()):
            if '"deploy.done"' in line:
                return float(json.loads(line[line.index("{") :])["seconds"])
        return None

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)


def _unix(stamp: str) -> float:
    """Docker's RFC 3339 time with nanoseconds, as a Unix time (0 for "never")."""
    if stamp.startswith("0001-"):
        return 0.0
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    base = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    return base + (float(f"0.{fraction}") if fraction else 0.0)


@dataclass
class Run:
    layout: str
    wall_s: float
    downtime_s: float
    outages: int
    deploy_s: float | None
    # The last outage, in phases: the old app's stop (first failed probe) to the sidecar's
    # container start, the sidecar's run, its exit to the new app's start, the app's start
    # to the first good probe. For "run, then up -d" that outage is the code swap, where the
    # sidecar runs too, with nothing to do.
    phases: dict[str, float] = field(default_factory=dict)


def one_run(layout: str, *, restart_v1: bool = False) -> Run:
    project = Project()
    probe = Probe(project.port)
    try:
        project.compose("up", "-d", "--wait")
        time.sleep(3)  # writing, with a lull or two behind it
        probe.start()
        time.sleep(1)
        started = time.time()
        deploy_s = None
        if layout.startswith("run, then"):
            ran = project.compose(
                "run", "--rm", "-e", "SIDECAR_LOG_FORMAT=json", "-e", "SIDECAR_SCHEMA=/schema",
                "-v", f"{ROOT}/deploy/schema/v2:/schema:ro", "sidecar", "deploy",
                "--restart", "on-change" if restart_v1 else "never",
            )  # fmt: skip
            deploy_s = project.deploy_seconds(ran.stderr)
        no_deps = layout.endswith("--no-deps app")
        if layout.endswith("(floor)"):
            override = Path(tempfile.mkdtemp()) / "noop-dependency.yml"
            override.write_text(NOOP_DEPENDENCY)
            project.files.append(str(override))
            project.scratch = override.parent
            project.compose("up", "-d", "--force-recreate", "app")
            deploy_s = 0.0
        else:
            project.image = DEMO_V2_IMAGE
            project.compose("up", "-d", *(["--no-deps", "app"] if no_deps else []))
        healthy = project.wait_healthy()
        if deploy_s is None:
            deploy_s = project.deploy_seconds(project.compose("logs", "sidecar").stdout)
        # The probe sees the app back a little after Docker's HEALTHCHECK does, or before.
        deadline = time.time() + 10
        while time.time() < deadline and (
            not probe.results or not probe.results[-1][1] or probe.results[-1][0] < healthy
        ):
            time.sleep(PROBE_EVERY)
        probe.stop()
        outages = probe.outages(started)
        downtime = sum(end - begin for begin, end in outages)
        down, up = outages[-1] if outages else (float("nan"), float("nan"))
        app_started, _ = project.times("app")
        if no_deps:  # the sidecar's container is v1's first start: not in this outage
            phases = {"old app stopped -> app started": app_started - down}
        else:
            sidecar_started, sidecar_done = project.times("sidecar")
            phases = {
                "old app stopped -> sidecar started": sidecar_started - down,
                "sidecar ran": sidecar_done - sidecar_started,
                "sidecar exited -> app started": app_started - sidecar_done,
            }
        phases["app started -> first good probe"] = up - app_started
        return Run(layout, healthy - started, downtime, len(outages), deploy_s, phases)
    finally:
        probe.stop()
        project.down()
        if project.scratch is not None:
            shutil.rmtree(project.scratch, ignore_errors=True)


def _target(run: Run) -> float:
    """The issue's bound on one release's downtime: the deploy's own window, when the deploy
    runs inside the outage (``up -d``), plus the app's start, plus 1 s."""
    inside = (run.deploy_s or 0.0) if run.layout.startswith("up -d") else 0.0
    return inside + run.phases["app started -> first good probe"] + 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--restart-v1",
        action="store_true",
        help="run, then up -d: restart v1 after the change (a second outage)",
    )
    args = parser.parse_args()

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    layouts = (
        "up -d",
        "run, then up -d",
        "run, then up -d --no-deps app",
        "up -d, no-op dependency (floor)",
    )
    runs: list[Run] = []
    for index in range(args.runs):
        for layout in layouts:  # interleaved: a busy moment hurts both alike
            print(f"run {index + 1}/{args.runs}: {layout}", file=sys.stderr, flush=True)
            runs.append(one_run(layout, restart_v1=args.restart_v1))
            print(f"  {runs[-1]}", file=sys.stderr, flush=True)
    print(f"#### The demo's v1 -> v2 release (median of {args.runs} runs; probe every 50 ms)\n")
    print(
        "| layout | release, wall (s) | downtime users see (s) | outages | deploy (s) "
        "| target (s) | met |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for layout in layouts:
        mine = [r for r in runs if r.layout == layout]
        deploys = [r.deploy_s for r in mine if r.deploy_s is not None]
        downtime = statistics.median(r.downtime_s for r in mine)
        target = statistics.median(_target(r) for r in mine)
        print(
            f"| {layout} | {statistics.median(r.wall_s for r in mine):.2f} "
            f"| {downtime:.2f} | {statistics.median(r.outages for r in mine):g} "
            f"| {statistics.median(deploys) if deploys else float('nan'):.2f} "
            f"| {target:.2f} | {'yes' if downtime <= target else 'no'} |"
        )
    print(
        "\ntarget: the deploy's window (when it runs inside the outage) + the app's start "
        "(its container's start to the first good probe) + 1 s"
    )
    phases = list(dict.fromkeys(k for r in runs for k in r.phases))
    print("\n#### The last outage of each release, in phases (median, seconds)\n")
    print("| layout | " + " | ".join(phases) + " |")
    print("|---|" + "---:|" * len(phases))
    for layout in layouts:
        mine = [r for r in runs if r.layout == layout]
        cells = [
            f"{statistics.median(r.phases[k] for r in mine):.2f}" if k in mine[0].phases else ""
            for k in phases
        ]
        print(f"| {layout} | " + " | ".join(cells) + " |")
    print("\nEvery run (wall, downtime):", file=sys.stderr)
    for run in runs:
        print(f"  {run.layout}: {run.wall_s:.2f} s, {run.downtime_s:.2f} s down "
              f"({run.outages} outage(s)), deploy {run.deploy_s}, "
              + ", ".join(f"{k} {v:.2f}" for k, v in run.phases.items()),
              file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
