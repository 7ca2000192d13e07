"""CI's fixed sample of the chaos suite, part 1: seeded fault schedules against the emulator,
each checked against a fault-free run of its world. The kills and the canary are files of their
own, so that the sample's parts run side by side."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.faults import FAILURE_KINDS
from tests.chaos.schedules import run_schedules

pytestmark = pytest.mark.chaos  # in `make samples`, `make chaos` and CI, not in the default suite

FAULT_SCHEDULES = 20


@pytest.mark.timeout(900)
def test_the_fixed_fault_schedules_break_nothing(tmp_path: Path) -> None:
    figures = run_schedules(FAULT_SCHEDULES, seed=0, kills=0, canary=False, corpus=False, workdir=tmp_path)
    assert figures["breaks"] == []
    assert figures["invariant_breaks"] == 0
    assert figures["rows_lost"] == 0
    assert figures["duplicate_rows"] == 0
    assert figures["schedules_run"] == FAULT_SCHEDULES
    injected = figures["faults_injected"]
    assert {kind for kind in (*FAILURE_KINDS, "slow") if not injected.get(kind)} == set(), injected
