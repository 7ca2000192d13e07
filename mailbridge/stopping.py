"""SIGTERM and SIGINT stop a command, whatever it is doing: waiting, extracting or in dbt.

Outside a Dagster run either signal raises `Stopped`. Inside one, Dagster holds signals back
until the running step can take them (it then fails the step and the run). A watchdog thread
sees every signal as it arrives (through the wakeup fd, whoever's handler is installed): if the
process has not ended `grace_seconds` later, or a second signal comes, it runs the registered
clean-ups and ends the process; the kernel then drops the warehouse lock, and children die
with it (mailbridge.child).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE_SECONDS = 15.0
CLEANUP_SECONDS = 5.0


class Stopped(Exception):
    """The command was stopped by a signal; the exit code says which (130, 143)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"stopped by {self.signal_name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_received: list[int] = []
_cleanups: list[Callable[[], None]] = []


def received() -> int | None:
    """The first stop signal this process received inside `stop_on_signals`, if any."""
    return _received[0] if _received else None


def raise_if_received() -> None:
    """Raise Stopped when a signal came while someone else's handler (Dagster's) held it back."""
    if _received:
        raise Stopped(_received[0])


@contextlib.contextmanager
def cleanup_on_force(cleanup: Callable[[], None]) -> Iterator[None]:
    """Run `cleanup` (briefly, best effort) if the watchdog has to end the process."""
    _cleanups.append(cleanup)
    try:
        yield
    finally:
        _cleanups.remove(cleanup)


def _force_exit(signum: int, why: str) -> None:
    os.write(2, f"\n{why}: stopping now.\n".encode())
    done = threading.Event()

    def run_cleanups() -> None:
        for cleanup in list(reversed(_cleanups)):
            with contextlib.suppress(Exception):
                cleanup()
        done.set()

    threading.Thread(target=run_cleanups, daemon=True).start()
    done.wait(CLEANUP_SECONDS)
    os._exit(128 + signum)


def _watch(reader: socket.socket, grace_seconds: float) -> None:
    deadline: float | None = None
    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([reader], [], [], timeout)
        if not ready:
            signum = _received[0]
            _force_exit(signum, f"{signal.Signals(signum).name} did not stop the command within {grace_seconds:.0f}s")
        try:
            data = reader.recv(64)
        except OSError:
            return
        if not data:
            return  # the context ended
        for signum in data:
            if signum not in SIGNALS:
                continue
            if _received:
                _force_exit(_received[0], f"a second signal ({signal.Signals(signum).name})")
            _received.append(signum)
            deadline = time.monotonic() + grace_seconds


@contextlib.contextmanager
def stop_on_signals(grace_seconds: float = GRACE_SECONDS) -> Iterator[None]:
    """Within: SIGTERM and SIGINT raise Stopped (where no one else handles them), and end the
    process for sure `grace_seconds` after they came. Main thread only; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise Stopped(signum)

    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    _received.clear()
    old_wakeup = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    watchdog = threading.Thread(target=_watch, args=(reader, grace_seconds), name="stop-watchdog", daemon=True)
    watchdog.start()
    for signum in SIGNALS:
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        signal.set_wakeup_fd(old_wakeup)
        writer.close()
        watchdog.join(timeout=1)
        reader.close()
        sys.stderr.flush()
