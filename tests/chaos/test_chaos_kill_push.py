"""CI's fixed sample of the chaos suite, part 3: a real `mailbridge push` killed with SIGKILL
between batches; the runs after it complete by themselves and leave the ESP as a clean push does."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.schedules import run_kill_schedule

pytestmark = pytest.mark.chaos


@pytest.mark.timeout(900)
def test_a_killed_push_is_finished_once_by_the_next_run(tmp_path: Path) -> None:
    outcome = run_kill_schedule(1, tmp_path)  # an odd seed kills a push
    assert outcome.kind == "push_kill"
    assert outcome.breaks == [], outcome.note
    assert outcome.kills == 1, outcome.note
