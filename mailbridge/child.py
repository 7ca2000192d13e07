"""Child processes that die with the process that started them.

A killed `mailbridge sync` must not leave dbt (or the sandbox, or anything else it started)
writing on: on Linux each child asks the kernel for SIGKILL when its parent ends
(PR_SET_PDEATHSIG), before it runs the real program. `mailbridge-dbt` is dbt started that way;
`python -m mailbridge.child COMMAND...` runs any command that way.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with_parent(expected_parent: int | None = None) -> None:
    """SIGKILL this process when its parent ends (Linux; elsewhere nothing happens). The kernel
    means the parent *thread*: mailbridge starts children from its main thread. When the
    parent is gone already (it died before this ran), exit at once."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"prctl(PR_SET_PDEATHSIG): {os.strerror(error)}")
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(1)


def guarded(command: Sequence[str]) -> list[str]:
    """`command`, run so that it dies with this process."""
    return [sys.executable, "-m", "mailbridge.child", str(os.getpid()), *command]


def real_dbt() -> str:
    """dbt beside this interpreter (the project's venv), else whatever is on PATH."""
    beside = Path(sys.executable).parent / "dbt"
    return str(beside) if beside.is_file() else (shutil.which("dbt") or "dbt")


def dbt_main() -> None:
    """`mailbridge-dbt ARGS`: dbt ARGS, dying with the process that started it."""
    die_with_parent()
    dbt = real_dbt()
    os.execv(dbt, [dbt, *sys.argv[1:]])


def main() -> None:
    """`python -m mailbridge.child PARENT_PID COMMAND...`."""
    if len(sys.argv) < 3 or not sys.argv[1].isdigit():
        sys.exit("usage: python -m mailbridge.child PARENT_PID COMMAND [ARGS...]")
    die_with_parent(int(sys.argv[1]))
    os.execvp(sys.argv[2], sys.argv[2:])


if __name__ == "__main__":
    main()
