"""Bad input, case by case: the documented exit code, one ``error:`` line and one ``hint:``
line that name the file or the variable, and nothing lost (every database, side file and
backup byte-for-byte as before, no partial file left). The cases are data, in
``tests/faults/badinput.py``; ``tests/faults/safety_table.py`` prints the same cases as the
results table of ``docs/safety.md``.

A case marked ``bug`` is a known defect outside this suite's files: it is xfail(strict), so
it turns red the day the bug is fixed and the mark must go.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.badinput import (
    CASES,
    Case,
    World,
    contract_problems,
    lost_problems,
    restore_permissions,
    run_case,
)


def _params() -> list[object]:
    params: list[object] = []
    for case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else []
        params.append(pytest.param(case, id=case.id, marks=marks))
    return params


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("template") / "world")


@pytest.fixture
def world(tmp_path: Path, template: World) -> Iterator[World]:
    made = World(tmp_path / "world", template)
    yield made
    restore_permissions(made)


@pytest.mark.parametrize("case", _params())
def test_bad_input(case: Case, world: World) -> None:
    reason = case.skip_reason()
    if reason:
        pytest.skip(reason)
    outcome, before, _ = run_case(case, world)
    detail = f"\nstdout: {outcome.stdout[-1500:]}\nstderr: {outcome.stderr[-3000:]}"
    assert contract_problems(case, world, outcome) == [], detail
    assert lost_problems(case, world, before) == [], detail
