"""Print the bad-input results table of docs/safety.md from real runs of every case.

    .venv/bin/python -m tests.faults.safety_table             # the markdown table
    .venv/bin/python -m tests.faults.safety_table --problems  # and, on stderr, what failed

Each row runs one case of ``tests/faults/badinput.py`` in a fresh temporary folder, exactly
as ``tests/unit/test_bad_input.py`` does, and reports what the user saw.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tests.faults.badinput import (
    CASES,
    World,
    contract_problems,
    lost_problems,
    restore_permissions,
    run_case,
)


def cell(text: str, limit: int = 160) -> str:
    """Markdown-safe, printable, one line, at most ``limit`` characters."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    text = text.replace("|", "\\|").replace("`", "'")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the bad-input results table")
    parser.add_argument("--problems", action="store_true", help="list each failing check")
    args = parser.parse_args(argv)
    print("| case | command | exit | what the user sees (error line, or the result) | "
          "nothing lost | verdict |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    template_dir = tempfile.TemporaryDirectory(prefix="sidecar-safety-template-")
    template = World(Path(template_dir.name) / "w")
    for case in CASES:
        reason = case.skip_reason()
        if reason:
            print(f"| {cell(case.id)} | | | skipped: {cell(reason)} | | |")
            continue
        with tempfile.TemporaryDirectory(prefix="sidecar-safety-") as tmp:
            world = World(Path(tmp) / "w", template)
            try:
                outcome, before, run_argv = run_case(case, world)
                contract = contract_problems(case, world, outcome)
                lost = lost_problems(case, world, before)
            finally:
                restore_permissions(world)
            short = str(world.root)
            message = outcome.message.replace(short, "…")
            command = "sidecar " + " ".join(run_argv).replace(short, "…")
        if not contract and not lost:
            verdict = "as documented"
        elif case.bug:
            verdict = "**bug** (xfail)"
        else:
            verdict = "**FAIL**"
        nothing_lost = "✓" if not lost else "✗ " + cell("; ".join(lost).replace(short, "…"), 80)
        print(f"| {cell(case.id)} | `{cell(command, 60)}` | {outcome.code} | "
              f"{cell(message)} | {nothing_lost} | {verdict} |")  # fmt: skip
        if args.problems and (contract or lost):
            print(f"{case.id}: {[p.replace(short, '…') for p in contract + lost]}",
                  file=sys.stderr)  # fmt: skip
    template_dir.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
