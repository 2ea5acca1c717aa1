"""Container benchmark: sidecar container start to first log line, and a Compose one-shot backup.

    .venv/bin/python bench/container_bench.py                 # 5 start runs, 3 compose runs
    .venv/bin/python bench/container_bench.py --start-runs 7 --compose-runs 5

Start (part a): ``docker run --rm sidecar:local version`` and ``... health --backups-only``,
timed from the moment the ``docker`` CLI process is spawned to the first line of output
(stdout and stderr merged), and to the CLI's exit (container removed). Baselines in the same
run, same image: ``--entrypoint python3 -c "print(1)"`` (the bare interpreter) and
``--entrypoint true`` (no output: only its exit is timed). The sidecar's own import and
start-up overhead is its first line minus the bare interpreter's.

The same commands also run on a copy of the image without its code cache (``<image>-nocache``,
built from the image with ``/opt/sidecar/sidecar-code.cache`` removed, deleted at the end),
beside "a deploy's imports" (``python3 -c`` importing the deploy command's modules, then
printing): what the cache saves, measured in the same run.

Compose (part b): a Compose project of the repository's docker-compose.yml under a unique
``-p`` name, the demo app up, healthy and writing (DEMO_HTTP_PORT=0: any free loopback
port), then ``docker compose run --rm sidecar backup`` end to end, against
``docker compose run --rm --no-deps --entrypoint true sidecar`` and
``docker compose run --rm --no-deps sidecar backup`` (without the dependency check). The
backup's own ``seconds`` (from its ``backup.created`` log event) splits the total into work
and Compose/Docker overhead. The project is removed (``down -v``) at the end, even on
failure or SIGTERM.

Everything goes through the ``docker`` CLI in subprocesses (no SDK): that is what a user
types. Rounds are interleaved so a noisy machine hurts every command alike; one unmeasured
warm-up round runs first. Markdown tables on stdout, progress on stderr, the raw figures in
bench/out/container-<time>.json. Nothing asserts timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
SIDECAR_IMAGE = os.environ.get("SIDECAR_IMAGE", "sidecar:local")
DEMO_IMAGE = os.environ.get("DEMO_IMAGE", "sidecar-demo-app:local")


@dataclass(frozen=True)
class Sample:
    first_line_s: float | None  # None: the command printed nothing
    exit_s: float
    returncode: int
    first_line: str
    output: str


def timed(argv: list[str], env: dict[str, str] | None = None) -> Sample:
    """Spawn ``argv``; time its first output line and its exit (both from the spawn)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    )
    assert proc.stdout is not None  # noqa: S101 - stdout=PIPE above
    line = proc.stdout.readline()
    first = time.perf_counter() - started if line else None
    rest = proc.stdout.read()
    returncode = proc.wait()
    ended = time.perf_counter() - started
    text = line.decode("utf-8", "replace")
    return Sample(first, ended, returncode, text.strip(), text + rest.decode("utf-8", "replace"))


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values)


def fmt_runs(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


# ---- part a: docker run to the first line -----------------------------------------------


NOCACHE_IMAGE = f"{SIDECAR_IMAGE}-nocache"
DEPLOY_IMPORTS = (
    "from sidecar import codecache; codecache.install(); "
    "import sidecar.cli, sidecar.commands.deploy; print(1)"
)
BARE = '`--entrypoint python3 -c "print(1)"` (baseline)'
START_CASES: dict[str, list[str]] = {
    "`--entrypoint true` (baseline, no output: exit)": ["--entrypoint", "true", SIDECAR_IMAGE],
    BARE: ["--entrypoint", "python3", SIDECAR_IMAGE, "-c", "print(1)"],
    "`sidecar version`": [SIDECAR_IMAGE, "version"],
    "`sidecar health --backups-only`": [SIDECAR_IMAGE, "health", "--backups-only"],
    "a deploy's imports": ["--entrypoint", "python3", SIDECAR_IMAGE, "-c", DEPLOY_IMPORTS],
    "a deploy's imports, no code cache": [
        "--entrypoint", "python3", NOCACHE_IMAGE, "-c", DEPLOY_IMPORTS,
    ],
    "`sidecar version`, no code cache": [NOCACHE_IMAGE, "version"],
    "`sidecar health --backups-only`, no code cache": [NOCACHE_IMAGE, "health", "--backups-only"],
}  # fmt: skip


def build_nocache_image() -> None:
    """The image without its code cache: the only difference from SIDECAR_IMAGE."""
    dockerfile = (
        f"FROM {SIDECAR_IMAGE}\nUSER 0\nRUN rm /opt/sidecar/sidecar-code.cache\n"
        "USER sidecar:sidecar\n"
    )
    subprocess.run(["docker", "build", "-q", "-t", NOCACHE_IMAGE, "-"], input=dockerfile.encode(),
                   check=True, capture_output=True)  # fmt: skip


def bench_start(runs: int) -> dict[str, list[Sample]]:
    results: dict[str, list[Sample]] = {name: [] for name in START_CASES}
    for round_ in range(runs + 1):  # round 0 warms the caches and is not kept
        for name, args in START_CASES.items():
            sample = timed(["docker", "run", "--rm", *args])
            if round_ == 0:
                if sample.returncode not in (0, 4):  # health is 4 (unhealthy): no backup yet
                    raise SystemExit(f"{name} failed ({sample.returncode}): {sample.output}")
                continue
            results[name].append(sample)
            shown = f"{sample.first_line_s:.2f}" if sample.first_line_s is not None else "-"
            progress(
                f"  start run {round_}: {name}: first line {shown} s, exit {sample.exit_s:.2f} s"
            )
    return results


def report_start(results: dict[str, list[Sample]]) -> None:
    runs = len(next(iter(results.values())))
    print(f"\n### Container start to first log line (median of {runs} runs)\n")
    print(
        "`docker run --rm` through the docker CLI, timed from spawning the CLI; stdout and "
        "stderr merged.\n"
    )
    bare = median([s.first_line_s or 0.0 for s in results[BARE]])
    print("| command | first line s | x bare python | exit s | first line, runs (s) | first line |")
    print("|---|---:|---:|---:|---|---|")
    for name, samples in results.items():
        exit_s = median([s.exit_s for s in samples])
        firsts = [s.first_line_s for s in samples if s.first_line_s is not None]
        if firsts:
            first = median(firsts)
            cells = f"{first:.2f} | {first / bare:.2f} | {exit_s:.2f} | {fmt_runs(firsts)}"
        else:
            cells = f" |  | {exit_s:.2f} | exit: {fmt_runs([s.exit_s for s in samples])}"
        line = samples[-1].first_line.replace("|", "\\|")[:60]
        print(f"| {name} | {cells} | `{line}` |" if line else f"| {name} | {cells} |  |")
    print()
    for name in ("`sidecar version`", "`sidecar health --backups-only`"):
        # Paired by round: both ran within seconds of each other.
        diffs = [
            (s.first_line_s or 0.0) - (b.first_line_s or 0.0)
            for s, b in zip(results[name], results[BARE], strict=True)
        ]
        print(
            f"- sidecar's own import + start-up, {name}: {median(diffs) * 1000:.0f} ms "
            f"(median of per-round differences to the bare interpreter; runs: "
            f"{', '.join(f'{d * 1000:.0f}' for d in diffs)} ms)"
        )
    true_exit = median(
        [s.exit_s for s in results["`--entrypoint true` (baseline, no output: exit)"]]
    )
    print(
        f"- container lifecycle floor (`true`, create + start + wait + remove): {true_exit:.2f} s"
    )


# ---- part b: docker compose run --rm sidecar backup -------------------------------------


class Project:
    def __init__(self) -> None:
        self.name = f"sidecarbench{uuid.uuid4().hex[:8]}"
        self.env = {
            **os.environ,
            "SIDECAR_IMAGE": SIDECAR_IMAGE,
            "DEMO_IMAGE": DEMO_IMAGE,
            "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
            "DEMO_HTTP_PORT": "0",  # any free port on 127.0.0.1: never a fixed, shared one
        }

    def argv(self, *args: str) -> list[str]:
        return [
            "docker", "compose", "--project-directory", str(ROOT), "-p", self.name,
            "-f", str(ROOT / "docker-compose.yml"), *args,
        ]  # fmt: skip

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args), env=self.env, capture_output=True, text=True, timeout=timeout,
            check=False,
        )  # fmt: skip

    def down(self) -> None:
        done = self.run("down", "--volumes", "--remove-orphans", "--timeout", "5")
        progress(f"  compose down -v {self.name}: exit {done.returncode}")


COMPOSE_CASES: dict[str, list[str]] = {
    "`run --rm --no-deps --entrypoint true sidecar` (baseline)": [
        "run",
        "--rm",
        "--no-deps",
        "--entrypoint",
        "true",
        "sidecar",
    ],
    "`run --rm --no-deps sidecar backup`": ["run", "--rm", "--no-deps", "sidecar", "backup"],
    "`run --rm sidecar backup`": ["run", "--rm", "sidecar", "backup"],
}
COMPOSE_BASE = "`run --rm --no-deps --entrypoint true sidecar` (baseline)"


def backup_event(output: str) -> dict[str, object]:
    for line in output.splitlines():
        if line.startswith("{"):
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict) and event.get("event") == "backup.created":
                return event
    return {}


def bench_compose(project: Project, runs: int) -> dict[str, list[Sample]]:
    up = project.run("up", "--detach", "--wait", "--wait-timeout", "120", "app")
    if up.returncode != 0:
        raise SystemExit(f"compose up app failed ({up.returncode}):\n{up.stderr}")
    progress(f"  {project.name}: app up and healthy")
    results: dict[str, list[Sample]] = {name: [] for name in COMPOSE_CASES}
    for round_ in range(runs + 1):  # round 0 warms up and is not kept
        for name, args in COMPOSE_CASES.items():
            sample = timed(project.argv(*args), env=project.env)
            if sample.returncode != 0:
                raise SystemExit(f"{name} failed ({sample.returncode}):\n{sample.output}")
            if round_ == 0:
                continue
            results[name].append(sample)
            progress(f"  compose run {round_}: {name}: {sample.exit_s:.2f} s")
    return results


def report_compose(results: dict[str, list[Sample]]) -> None:
    runs = len(next(iter(results.values())))
    print(f"\n### `docker compose run --rm sidecar backup` end to end (median of {runs} runs)\n")
    print(
        "The demo project up (app healthy, committing in bursts); timed from spawning "
        '`docker compose` to its exit. "in container" is the backup\'s own `seconds` '
        "(its `backup.created` event).\n"
    )
    base = median([s.exit_s for s in results[COMPOSE_BASE]])
    print(
        "| command | seconds | x baseline | minus baseline | in container s | db bytes | runs (s) |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, samples in results.items():
        total = median([s.exit_s for s in samples])
        events = [backup_event(s.output) for s in samples]
        inside = [float(str(e["seconds"])) for e in events if "seconds" in e]
        db_bytes = [int(str(e["db_bytes"])) for e in events if "db_bytes" in e]
        print(
            f"| {name} | {total:.2f} | {total / base:.2f} | {total - base:+.2f} "
            f"| {f'{median(inside):.3f}' if inside else ''} "
            f"| {f'{db_bytes[-1]:,}' if db_bytes else ''} "
            f"| {fmt_runs([s.exit_s for s in samples])} |"
        )


# ---- main --------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    def out(*argv: str) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    size = int(out("docker", "image", "inspect", "--format", "{{.Size}}", SIDECAR_IMAGE) or 0)
    return {
        "cpus": str(os.cpu_count()),
        "kernel": platform.release(),
        "docker engine": out("docker", "version", "--format", "{{.Server.Version}}"),
        "compose": out("docker", "compose", "version", "--short"),
        "image": " ".join(
            [
                SIDECAR_IMAGE,
                out("docker", "image", "inspect", "--format", "{{.Id}}", SIDECAR_IMAGE)[7:19],
                f"{size / 1e6:.0f} MB",
            ]
        ),
    }


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally that removes the project


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start-runs", type=int, default=5, help="docker run rounds (>= 5)")
    parser.add_argument("--compose-runs", type=int, default=3, help="compose rounds (>= 3)")
    parser.add_argument("--skip-compose", action="store_true", help="part a only")
    parser.add_argument("--dir", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    info = versions()
    print("## Containers\n")
    print(", ".join(f"{k}: {v}" for k, v in info.items()))
    report: dict[str, object] = {"machine": info}

    build_nocache_image()
    try:
        start = bench_start(max(5, args.start_runs))
    finally:
        subprocess.run(["docker", "rmi", "-f", NOCACHE_IMAGE], capture_output=True, check=False)
    report_start(start)
    report["start"] = {k: [asdict(s) for s in v] for k, v in start.items()}

    if not args.skip_compose:
        project = Project()
        try:
            compose = bench_compose(project, max(3, args.compose_runs))
        finally:
            project.down()
        report_compose(compose)
        report["compose"] = {k: [asdict(s) for s in v] for k, v in compose.items()}

    args.dir.mkdir(parents=True, exist_ok=True)
    out = args.dir / f"container-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    progress(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
