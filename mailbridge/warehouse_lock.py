"""One writer at a time on the warehouse: a lock file beside it that says who holds it.

DuckDB lets one process write a database file, and a reader of the file blocks a writer as
much as a writer blocks it. Every mailbridge command and Dagster run that writes (sync, push,
decide, send) holds `<warehouse>.lock` exclusively while it does; the kernel drops the lock
when the process ends, killed or not, so a dead holder never blocks the next run. The file
keeps the holder's pid, command, run id and start time, for the message of whoever waits.

Readers (status, explain, export) never wait for a writer: while one holds the lock they read
`<warehouse stem>.snapshot.duckdb`, the copy each writer makes of the warehouse before it
starts writing, so what they see is the state the last writer left, never a half-written one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

LOG = logging.getLogger("mailbridge.warehouse")
POLL_SECONDS = 0.2
# how long a writer waits for another by default (`warehouse_wait_seconds` in mailbridge.yaml)
DEFAULT_WAIT_SECONDS = 1800.0


class WarehouseBusy(Exception):
    """The warehouse stayed locked for longer than the caller would wait."""

    def __init__(self, message: str, holder: Holder | None) -> None:
        super().__init__(message)
        self.holder = holder


class WarehouseInUse(Exception):
    """Another program (not mailbridge) has the DuckDB file open for writing."""


class WaitStopped(Exception):
    """The run was asked to stop while it waited for the warehouse."""


def process_start_time(pid: int) -> str | None:
    """When the process started (Linux: clock ticks since boot), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: fields count from the last ')'
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def process_is_alive(pid: int, started: str | None = None) -> bool:
    """Is the process running (not a zombie), and the same one that started at `started`?"""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    if not Path("/proc/self").exists():
        return True  # no /proc (macOS): kill(0) is all there is to go by
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat[stat.rfind(")") + 2 :].split()[:1] == ["Z"]:
        return False
    return started is None or process_start_time(pid) in (None, started)


@dataclass(frozen=True)
class Holder:
    """Who holds the warehouse: written into the lock file while they do."""

    pid: int
    host: str
    command: str
    started_at: str
    run_id: str | None = None
    process_started: str | None = None
    # the snapshot shows the warehouse as this holder found it: readers may use it
    snapshot_ready: bool = False

    @classmethod
    def me(cls, command: str, run_id: str | None) -> Holder:
        return cls(
            pid=os.getpid(),
            host=socket.gethostname(),
            command=command,
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            run_id=run_id,
            process_started=process_start_time(os.getpid()),
        )

    def describe(self) -> str:
        run = f"run {self.run_id}, " if self.run_id else ""
        return f"`{self.command}` ({run}pid {self.pid} on {self.host}, since {self.started_at})"

    def is_gone(self) -> bool:
        """Certainly dead: on this host, and no process with its pid and start time runs."""
        return self.host == socket.gethostname() and not process_is_alive(self.pid, self.process_started)


def lock_path(warehouse: Path) -> Path:
    return warehouse.with_name(warehouse.name + ".lock")


def snapshot_path(warehouse: Path) -> Path:
    """The readers' copy: warehouse.duckdb → warehouse.snapshot.duckdb."""
    return warehouse.with_name(f"{warehouse.stem}.snapshot{warehouse.suffix or '.duckdb'}")


@dataclass
class _Hold:
    fd: int
    pid: int
    exclusive: bool
    depth: int = 1


# locks this process holds, by lock file: a nested hold (a Dagster run inside `mailbridge sync`,
# a push inside the run) is the same hold, not a second lock that would wait for the first
_HELD: dict[str, _Hold] = {}


def _held(warehouse: Path) -> _Hold | None:
    hold = _HELD.get(str(lock_path(warehouse)))
    # a forked child inherits the table, not the right to the parent's lock
    return hold if hold is not None and hold.pid == os.getpid() else None


def holds_warehouse(warehouse: Path) -> bool:
    """Does this process hold the warehouse for writing?"""
    hold = _held(warehouse.resolve())
    return hold is not None and hold.exclusive


def _read_holder(fd: int) -> Holder | None:
    try:
        raw = os.pread(fd, 65536, 0)
        if not raw.strip():
            return None
        data = json.loads(raw)
        return Holder(**{key: data.get(key) for key in Holder.__dataclass_fields__})
    except (OSError, ValueError, TypeError):
        return None  # being rewritten, or not ours: the next look will tell


def _write_holder(fd: int, holder: Holder | None) -> None:
    data = json.dumps(asdict(holder)).encode() if holder else b""
    os.ftruncate(fd, 0)
    if data:
        os.pwrite(fd, data, 0)


def current_holder(warehouse: Path) -> Holder | None:
    """Who holds the warehouse for writing now, if anyone (without taking the lock)."""
    try:
        fd = os.open(lock_path(warehouse.resolve()), os.O_RDWR)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _open_lock(warehouse: Path) -> int:
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    return os.open(lock_path(warehouse), os.O_RDWR | os.O_CREAT, 0o644)


def _wait_for(
    fd: int,
    mode: int,
    warehouse: Path,
    timeout: float,
    notify: Callable[[str], None],
    stop_requested: Callable[[], bool] | None,
) -> None:
    """flock(mode), polling so that a signal or the deadline ends the wait."""
    deadline = time.monotonic() + timeout
    announced: Holder | bool | None = False
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        except OSError as error:  # pragma: no cover - filesystems without flock
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        holder = _read_holder(fd)
        waiter = f"the warehouse {warehouse} is in use by " + (
            holder.describe() if holder else "a reader or a writer that is just starting"
        )
        if holder != announced and timeout > 0:
            notify(f"Waiting: {waiter}; giving up after {timeout:.0f}s.")
            announced = holder
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WarehouseBusy(
                f"gave up after waiting {timeout:.0f}s: {waiter}. Nothing was changed. Run again once it "
                "has finished, or wait longer (--wait SECONDS, or warehouse_wait_seconds in mailbridge.yaml).",
                holder,
            )
        if stop_requested is not None and stop_requested():
            raise WaitStopped(f"stopped while waiting: {waiter}")
        time.sleep(min(POLL_SECONDS, remaining))


def _log_notice(message: str) -> None:
    LOG.warning(message)


@dataclass(frozen=True)
class WriteHold:
    """A hold of the warehouse for writing; `previous` is a holder that died while it held it."""

    warehouse: Path
    holder: Holder
    outermost: bool
    previous: Holder | None


@contextlib.contextmanager
def hold_warehouse(
    warehouse: Path,
    command: str,
    *,
    timeout: float,
    run_id: str | None = None,
    notify: Callable[[str], None] | None = None,
    stop_requested: Callable[[], bool] | None = None,
) -> Iterator[WriteHold]:
    """Hold the warehouse for writing, waiting at most `timeout` seconds (WarehouseBusy after).
    Before the holder writes, readers get a snapshot of the warehouse as it is."""
    warehouse = warehouse.resolve()
    nested = _held(warehouse)
    if nested is not None and nested.exclusive:
        nested.depth += 1
        try:
            yield WriteHold(warehouse, _read_holder(nested.fd) or Holder.me(command, run_id), False, None)
        finally:
            nested.depth -= 1
        return
    if nested is not None:
        raise RuntimeError(f"{warehouse} is held for reading by this process: it cannot write it too")
    fd = _open_lock(warehouse)
    key = str(lock_path(warehouse))
    try:
        _wait_for(fd, fcntl.LOCK_EX, warehouse, timeout, notify or _log_notice, stop_requested)
        # a holder record left behind: its process died while it held the warehouse
        previous = _read_holder(fd)
        holder = Holder.me(command, run_id)
        _write_holder(fd, holder)
        _HELD[key] = _Hold(fd, os.getpid(), exclusive=True)
        try:
            refresh_snapshot(warehouse)
            holder = replace(holder, snapshot_ready=True)
            _write_holder(fd, holder)
            yield WriteHold(warehouse, holder, True, previous)
        finally:
            del _HELD[key]
            _write_holder(fd, None)
    finally:
        os.close(fd)  # closing drops the lock


@contextlib.contextmanager
def read_warehouse(
    warehouse: Path,
    *,
    timeout: float,
    notify: Callable[[str], None] | None = None,
) -> Iterator[Path]:
    """The file to read the warehouse from: the warehouse itself when no one writes it (held
    shared meanwhile, so that no writer starts under the reader), else the snapshot the writer
    made before it started. Without a snapshot, it waits for the writer like a writer would."""
    warehouse = warehouse.resolve()
    if _held(warehouse) is not None or not warehouse.exists():
        yield warehouse
        return
    try:
        fd = _open_lock(warehouse)
    except OSError:
        yield warehouse  # a read-only folder: no one can write there either
        return
    key = str(lock_path(warehouse))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            shared = True
        except BlockingIOError:
            shared = False
        if not shared:
            snapshot = snapshot_path(warehouse)
            holder = _snapshot_holder(fd, timeout)
            if holder is not None and snapshot.is_file():
                taken = datetime.fromtimestamp(snapshot.stat().st_mtime, UTC).isoformat(timespec="seconds")
                (notify or _log_notice)(
                    f"{holder.describe()} is writing the warehouse: showing it as it was before (last changed {taken})."
                )
                yield snapshot
                return
            _wait_for(fd, fcntl.LOCK_SH, warehouse, timeout, notify or _log_notice, None)
        # a write from inside the read would wait for this very process: refused instead
        _HELD[key] = _Hold(fd, os.getpid(), exclusive=False)
        try:
            yield warehouse
        finally:
            del _HELD[key]
    finally:
        os.close(fd)


def _snapshot_holder(fd: int, timeout: float) -> Holder | None:
    """The writer holding the lock once its snapshot is ready (it copies first, then writes);
    None when the lock came free meanwhile or the snapshot is not there in time."""
    deadline = time.monotonic() + timeout
    while True:
        holder = _read_holder(fd)
        if holder is not None and holder.snapshot_ready:
            return holder
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL_SECONDS / 4)
            continue
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None


def refresh_snapshot(warehouse: Path) -> None:
    """Copy the warehouse to its snapshot (skipped when the snapshot is that state already).
    Only the holder of the write lock calls this: nothing writes the file meanwhile."""
    snapshot = snapshot_path(warehouse)
    if not warehouse.is_file():
        snapshot.unlink(missing_ok=True)
        return
    wal = warehouse.with_name(warehouse.name + ".wal")
    if wal.is_file() and wal.stat().st_size > 0:
        # a writer that died left its last transactions in the WAL: into the file with them
        import duckdb

        try:
            with duckdb.connect(str(warehouse)) as db:
                db.execute("checkpoint")
        except duckdb.IOException as error:
            snapshot.unlink(missing_ok=True)
            raise WarehouseInUse(
                f"{warehouse} is open in another program (a BI tool or a duckdb shell?): close it, or point it "
                f"at {snapshot.name} instead. DuckDB said: {str(error).splitlines()[0]}"
            ) from None
        except duckdb.Error as error:
            LOG.warning("no snapshot for readers while this write runs: %s", str(error).splitlines()[0])
            snapshot.unlink(missing_ok=True)
            return
    for stale in snapshot.parent.glob(f"{snapshot.name}.*.partial"):
        stale.unlink(missing_ok=True)  # a copy whose writer died
    live = warehouse.stat()
    if snapshot.is_file():
        copied = snapshot.stat()
        if (copied.st_size, copied.st_mtime_ns) == (live.st_size, live.st_mtime_ns):
            return
    partial = snapshot.with_name(f"{snapshot.name}.{os.getpid()}.partial")
    try:
        shutil.copyfile(warehouse, partial)
        os.utime(partial, ns=(live.st_atime_ns, live.st_mtime_ns))
        os.replace(partial, snapshot)
    finally:
        partial.unlink(missing_ok=True)
