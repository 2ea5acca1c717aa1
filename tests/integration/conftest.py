"""Fixtures of the integration layer (the shared ones live in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.compose import ComposeProject


@pytest.fixture
def project(docker_client: Any, tmp_path: Path) -> Iterator[ComposeProject]:
    """The README's docker-compose.yml as a fresh Compose project, taken down afterwards."""
    project = ComposeProject(docker_client, tmp_path)
    try:
        yield project
    finally:
        project.down()
