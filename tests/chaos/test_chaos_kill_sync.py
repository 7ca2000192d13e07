"""CI's fixed sample of the chaos suite, part 2: a real `mailbridge sync` killed with SIGKILL at
a seeded moment; the runs after it complete by themselves, with the fault-free run's results."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.schedules import run_kill_schedule

pytestmark = pytest.mark.chaos


@pytest.mark.timeout(900)
def test_a_killed_sync_is_recovered_by_the_next_one(tmp_path: Path) -> None:
    outcome = run_kill_schedule(0, tmp_path)  # an even seed kills a sync
    assert outcome.kind == "sync_kill"
    assert outcome.breaks == [], outcome.note
    assert outcome.kills == 1, outcome.note
