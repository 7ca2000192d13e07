"""Run seeds side by side in one world, in lockstep, and check the invariants; shrink what breaks."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.simulation.events import NOOP, Event, EventGenerator, shared_schedule
from sandbox.simulation.invariants import (
    Break,
    check_cycle,
    check_incremental_equals_full,
    check_push,
    check_rerun,
    snapshot,
)
from sandbox.simulation.world import Lane, SyncFailed, World

Progress = Callable[[str], None]


@dataclass(frozen=True)
class LaneSpec:
    """A lane to run: a seed, its address prefix, and a given history or None (draw one)."""

    seed: int
    prefix: str
    events: tuple[Event | None, ...] | None = None


@dataclass
class LaneResult:
    seed: int
    prefix: str
    events: list[Event | None]  # per step: the seed's event, or None at shared steps
    applied: list[bool]
    breaks: list[Break]


@dataclass
class WorldRun:
    lanes: list[LaneResult]
    schedule: list[Event | None]
    shared_seconds: list[tuple[str, float]]
    notes: list[str]
    seconds: float


def full_schedule(steps: int) -> list[Event | None]:
    """The shared schedule of a run of `steps` steps, ended by a completed sync → push → sync."""
    return [*shared_schedule(steps), Event("sync_push")]


def run_world(
    specs: Sequence[LaneSpec], schedule: Sequence[Event | None], folder: Path, progress: Progress | None = None
) -> WorldRun:
    """Every lane in one world, step by step: at a shared step mailbridge runs for all of them."""
    started = time.monotonic()
    # an injected fault's extraction errors are expected outcomes here, not news
    logging.getLogger("pipelines").setLevel(logging.CRITICAL)
    lanes = [
        Lane(index=i, seed=spec.seed, prefix=spec.prefix, replay=list(spec.events) if spec.events is not None else None)
        for i, spec in enumerate(specs)
    ]
    world = World(folder, lanes)
    generators = {lane.index: EventGenerator(lane.seed, sorted(world.task_actions)) for lane in lanes}
    events: dict[int, list[Event | None]] = {lane.index: [] for lane in lanes}
    applied: dict[int, list[bool]] = {lane.index: [] for lane in lanes}
    breaks: dict[int, list[Break]] = {lane.index: [] for lane in lanes}
    seen: set[tuple[int, str, str]] = set()
    shared_seconds: list[tuple[str, float]] = []
    notes: list[str] = []
    pending_burst: str | None = None

    def report(found: list[Break]) -> None:
        for item in found:
            key = (item.lane, item.invariant, item.token)
            if key not in seen:
                seen.add(key)
                breaks[item.lane].append(item)
                if progress is not None:  # seen now: a long run's breaks need not wait for its end
                    progress(f"  BREAK seed {item.seed}: {item.line(f's{item.seed}')}")

    def pushed(step: int, what: str, kill: str | None = None, burst: str | None = None, rerun: bool = False) -> str:
        world.set_faults(burst)
        before = {lane.index: snapshot(world, lane) for lane in lanes}
        world.emulator.log.clear()
        run_id, _ = world.push(kill=kill)
        world.set_faults(None)
        # CRM writes the push left to the next one: the ESP member changed since the sync read it
        deferred = [row for row in world.outbox(run_id) if row["status"] == "stale"] if not rerun else []
        for lane in lanes:
            report(check_push(world, lane, before[lane.index], snapshot(world, lane), step, what))
            lane.reference.push_ran()
            if not rerun:  # the rerun is checked against what the push before it could not write
                lane.last_push_poison = {address.lower() for address in lane.poison} | {
                    str(row["email_key"] or "").lower() for row in deferred if row["list_link_id"] == lane.link_id
                }
            lane.poison.clear()
        return run_id

    try:
        for step, shared in enumerate(schedule):
            if shared is None:
                for lane in lanes:
                    if lane.replay is not None:
                        event = lane.replay[step] if step < len(lane.replay) else None
                        event = event or Event(NOOP)
                    else:
                        event = generators[lane.index].next_event(world.view(lane))
                    world.esp_members(lane)  # remembers statuses before an archive
                    events[lane.index].append(event)
                    applied[lane.index].append(world.apply(lane, event, step))
                continue
            for lane in lanes:
                events[lane.index].append(None)
                applied[lane.index].append(True)
            shared_started = time.monotonic()
            kind = shared.kind
            try:
                if kind == "fault_burst":
                    pending_burst = shared.args[0]
                elif kind in ("sync_incremental", "sync_full"):
                    world.sync(full=kind == "sync_full")
                elif kind == "push":
                    pushed(step, "push")
                elif kind == "push_killed":
                    pushed(step, f"push killed ({shared.args[0]})", kill=shared.args[0])
                elif kind == "sync_push":
                    burst, pending_burst = pending_burst, None
                    world.set_faults(burst if burst == "esp_down_member_reads" else None)
                    if step == len(schedule) - 1 and burst is None:
                        # the run's last cycle: its incremental sync must end where a full one would
                        report(check_incremental_equals_full(lanes, step, world.sync_beside_a_full_one()))
                    else:
                        world.sync(full=False)
                    world.set_faults(None)
                    pushed(
                        step, "push of sync → push → sync", burst=None if burst == "esp_down_member_reads" else burst
                    )
                    world.sync(full=False)
                    world.verify()
                    outbox = world.outbox()
                    for lane in lanes:
                        report(check_cycle(world, lane, step, complete=burst is None, outbox=outbox))
                        if burst is None:
                            lane.reference.cycle_completed()
                    if burst is None:
                        rerun = pushed(step, "no-change rerun push", rerun=True)
                        rerun_rows = world.outbox(rerun)
                        esp_writes = world.esp_write_requests()
                        for lane in lanes:
                            report(check_rerun(world, lane, step, rerun_rows, esp_writes))
            except SyncFailed as failure:
                world.set_faults(None)
                notes.append(f"step {step} ({shared.describe()}): {failure}")
            seconds = time.monotonic() - shared_started
            shared_seconds.append((kind, seconds))
            if progress is not None and kind != "fault_burst":
                found = sum(len(b) for b in breaks.values())
                progress(
                    f"  step {step + 1}/{len(schedule)} {shared.describe()}: {seconds:.1f}s ({found} breaks so far)"
                )
    finally:
        world.close()
    results = [
        LaneResult(lane.seed, lane.prefix, events[lane.index], applied[lane.index], breaks[lane.index])
        for lane in lanes
    ]
    return WorldRun(results, list(schedule), shared_seconds, notes, time.monotonic() - started)


@dataclass
class Finding:
    """One invariant break of one seed, with the shortest history found that still shows it."""

    seed: int
    first: Break
    history: list[tuple[int, Event]]  # (step, event) of the seed's own events that it needs
    steps: int  # the run length that shows it (shared steps included)
    shrunk: bool
    replay_steps: int = 0  # `mailbridge simulate --seed N --steps K` replays it
    others: list[int] = field(default_factory=list)  # other seeds with a break of the same kind
    shrink_state: str = "unshrunk"  # unshrunk | shrunk | partly shrunk (time budget)

    def render(self, schedule: Sequence[Event | None]) -> str:
        prefix = f"s{self.seed}"
        also = f" (same kind of break in {len(self.others)} other seed(s): {self.others[:10]})" if self.others else ""
        lines = [
            f"seed {self.seed}: {self.first.line(prefix)}{also}",
            f"  replay: mailbridge simulate --seed {self.seed} --steps {self.replay_steps}",
            f"  {self.shrink_state} history ({len(self.history)} of the seed's events, shared steps in brackets):",
        ]
        own = dict(self.history)
        for step in range(self.steps):
            shared = schedule[step] if step < len(schedule) else None
            if shared is not None:
                lines.append(f"    {step:3d} [{shared.describe()}]")
            elif step in own:
                lines.append(f"    {step:3d} {own[step].describe(prefix)}")
        return "\n".join(lines)


@dataclass
class SimulationReport:
    seeds: list[int]
    steps: int
    kinds_covered: dict[str, int]
    findings: list[Finding]
    notes: list[str]
    seconds: float
    shared_seconds: list[tuple[str, float]] = field(default_factory=list)
    schedule: list[Event | None] = field(default_factory=list)
    shrink_seconds: float = 0.0

    def summary(self) -> str:
        shared = [s for kind, s in self.shared_seconds if kind != "fault_burst"]
        per_shared = sum(shared) / len(shared) if shared else 0.0
        simulated = self.seconds - self.shrink_seconds
        lines = [
            f"simulated {len(self.seeds)} seed(s) × {self.steps} steps (+ a closing sync → push → sync) "
            f"in {simulated:.1f}s: {per_shared:.1f}s per shared step, "
            f"{simulated / max(len(self.seeds), 1):.2f}s per seed; shrinking {self.shrink_seconds:.1f}s",
            f"event kinds covered ({len(self.kinds_covered)}): "
            + ", ".join(f"{kind} {count}" for kind, count in sorted(self.kinds_covered.items())),
            f"invariant breaks: {len(self.findings)}",
        ]
        lines += [finding.render(self.schedule) for finding in self.findings]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def simulate(
    seeds: Sequence[int],
    steps: int,
    *,
    folder: Path | None = None,
    batch_size: int = 50,
    shrink: bool = True,
    shrink_seconds: float = 600.0,
    progress: Progress | None = None,
) -> SimulationReport:
    """Run the seeds (in worlds of `batch_size` lanes), check every invariant, shrink each break."""
    from sandbox.simulation.shrink import shrink_findings

    started = time.monotonic()
    schedule = full_schedule(steps)
    base = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="mailbridge-simulation-"))
    kinds: dict[str, int] = {}
    for event in schedule:
        if event is not None and event.kind != "fault_burst":
            kinds[event.kind] = kinds.get(event.kind, 0) + 1
        elif event is not None:
            kinds[f"fault_burst:{event.args[0]}"] = kinds.get(f"fault_burst:{event.args[0]}", 0) + 1
    findings: list[Finding] = []
    notes: list[str] = []
    shared_seconds: list[tuple[str, float]] = []
    seeds = list(seeds)
    try:
        for number, first in enumerate(range(0, len(seeds), batch_size)):
            batch = seeds[first : first + batch_size]
            if progress is not None:
                progress(f"world {number + 1}: seeds {batch[0]}..{batch[-1]} ({len(batch)} lanes)")
            run = run_world([LaneSpec(seed, f"s{seed}") for seed in batch], schedule, base / f"world{number}", progress)
            shared_seconds += run.shared_seconds
            notes += run.notes
            for lane in run.lanes:
                for event, was_applied in zip(lane.events, lane.applied, strict=True):
                    if event is not None and was_applied:
                        kinds[event.kind] = kinds.get(event.kind, 0) + 1
                for item in lane.breaks:
                    history = [
                        (s, e) for s, e in enumerate(lane.events[: item.step]) if e is not None and e.kind != NOOP
                    ]
                    findings.append(Finding(lane.seed, item, history, item.step + 1, shrunk=False, replay_steps=steps))
        shrink_started = time.monotonic()
        if shrink and findings:
            findings = shrink_findings(findings, schedule, base / "shrink", shrink_seconds, progress)
        shrinking = time.monotonic() - shrink_started
    finally:
        if folder is None:
            shutil.rmtree(base, ignore_errors=True)
    return SimulationReport(
        seeds, steps, kinds, findings, notes, time.monotonic() - started, shared_seconds, list(schedule), shrinking
    )
