"""CI's fixed sample of the chaos schedules: fault schedules, a killed sync, a killed push and the
secrets canary, with the figures they must come to."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.faults import FAILURE_KINDS
from tests.chaos.schedules import run_schedules

pytestmark = pytest.mark.chaos  # in `make samples` and `make chaos`, not in the default suite or CI

FAULT_SCHEDULES = 20
KILLS = 2  # seed 0 kills a sync, seed 1 a push


# two real syncs killed and recovered, the canary's commands: minutes on a busy machine
@pytest.mark.timeout(1800)
def test_the_fixed_sample_breaks_nothing(tmp_path: Path) -> None:
    figures = run_schedules(FAULT_SCHEDULES, seed=0, kills=KILLS, corpus=False, workdir=tmp_path)
    assert figures["breaks"] == []
    assert figures["invariant_breaks"] == 0
    assert figures["rows_lost"] == 0
    assert figures["duplicate_rows"] == 0
    assert figures["canary_hits"] == 0
    assert figures["kills"] == KILLS
    assert figures["schedules_run"] == FAULT_SCHEDULES + KILLS + 1
    injected = figures["faults_injected"]
    assert {kind for kind in (*FAILURE_KINDS, "slow") if not injected.get(kind)} == set(), injected
