"""SIGTERM and SIGINT stop a command, even where someone else's handler holds them back."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

COMMAND = """
import signal, sys, time
from pathlib import Path
from mailbridge.stopping import Stopped, cleanup_on_force, stop_on_signals

grace, held_back = float(sys.argv[2]), sys.argv[3] == "held_back"
try:
    with stop_on_signals(grace_seconds=grace), cleanup_on_force(lambda: Path(sys.argv[1]).write_text("cleaned")):
        if held_back:
            # what Dagster and dlt do in a run: the signal is noted, and taken only at a checkpoint
            signal.signal(signal.SIGTERM, lambda *_: None)
            signal.signal(signal.SIGINT, lambda *_: None)
        print("ready", flush=True)
        time.sleep(120)
except Stopped as stopped:
    print(stopped, flush=True)
    sys.exit(stopped.exit_code)
"""


def start(tmp_path: Path, grace: float, mode: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", COMMAND, str(tmp_path / "cleanup"), str(grace), mode],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_command(tmp_path: Path, signum: signal.Signals) -> None:
    process = start(tmp_path, 30, "plain")
    process.send_signal(signum)
    out, _ = process.communicate(timeout=10)
    assert process.returncode == 128 + signum
    assert f"stopped by {signum.name}" in out
    assert not (tmp_path / "cleanup").exists()  # it ended on its own: no forced clean-up


def test_a_signal_held_back_ends_the_process_after_the_grace_period(tmp_path: Path) -> None:
    process = start(tmp_path, 1, "held_back")
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=15)
    assert process.returncode == 143
    assert 0.9 < time.monotonic() - sent < 10
    assert "SIGTERM did not stop the command within 1s" in err
    assert (tmp_path / "cleanup").read_text() == "cleaned"


def test_a_second_signal_ends_the_process_at_once(tmp_path: Path) -> None:
    process = start(tmp_path, 60, "held_back")
    process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=15)
    assert process.returncode == 143
    assert time.monotonic() - sent < 10
    assert "a second signal (SIGINT)" in err
    assert (tmp_path / "cleanup").read_text() == "cleaned"
