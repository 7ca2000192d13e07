from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.chaos.schedules import prepare_environment


@pytest.fixture(autouse=True)
def chaos_environment(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test of the schedules (marked chaos) runs with their environment, restored afterwards."""
    if request.node.get_closest_marker("chaos") is None:
        yield
        return
    environ: dict[str, str] = {}
    prepare_environment(environ)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MAILBRIDGE_WAREHOUSE", raising=False)
    yield
