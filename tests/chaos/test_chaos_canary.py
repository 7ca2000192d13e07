"""CI's fixed sample of the chaos suite, part 4: a canary API key and a canary CRM password go
through the commands a user runs; neither shows in output, local state or the warehouse."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.schedules import run_secrets_canary

pytestmark = pytest.mark.chaos


@pytest.mark.timeout(900)
def test_no_command_shows_a_secret(tmp_path: Path) -> None:
    outcome = run_secrets_canary(tmp_path)
    assert outcome.breaks == [], outcome.note
    assert outcome.canary_hits == 0
