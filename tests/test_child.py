"""Children die with their parent: a killed sync leaves no dbt (or sandbox) running on."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO_ROOT


def state_of(pid: int) -> str:
    """The process's state letter (Z: a zombie, dead), or "gone"."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "gone"
    return stat[stat.rfind(")") + 2 :].split()[0]


def wait_until_dead(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if state_of(pid) in ("Z", "gone"):
            return True
        time.sleep(0.05)
    return False


PARENT = """
import subprocess, sys, time
from mailbridge.child import guarded
child = subprocess.Popen(guarded([sys.executable, "-c", "import time; time.sleep(300)"]))
time.sleep(0.5)  # the child has asked the kernel for its parent's death by now
print(child.pid, flush=True)
time.sleep(300)
"""


def test_a_guarded_child_dies_with_its_parent(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert state_of(child) not in ("Z", "gone")
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        assert wait_until_dead(child), f"the child {child} outlived its parent"
    finally:
        parent.kill()
        parent.wait()


def test_dbt_runs_through_the_guard() -> None:
    from assets.resources import dbt_executable

    executable = Path(dbt_executable())
    assert executable.name == "mailbridge-dbt"
    version = subprocess.run([str(executable), "--version"], capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and "Core" in version.stdout
