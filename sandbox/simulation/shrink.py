"""Shrinking, as hypothesis does: delta debugging (ddmin) over a seed's own events.

Each candidate history replays in a fresh pair of lists with its own address prefix; the
candidates of one round (for every break being shrunk) run side by side in one world, so a
round costs one world run. The shared mailbridge schedule stays as it was; a removed event
becomes a no-op, so every other event keeps its step.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.simulation.events import Event
from sandbox.simulation.invariants import Break
from sandbox.simulation.runner import Finding, LaneSpec, Progress, run_world

MAX_LANES_PER_WORLD = 60
MAX_TARGETS = 8


def break_class(finding: Finding) -> tuple[str, str]:
    """Breaks of one kind (invariant and message without addresses, numbers and times)."""
    detail = re.sub(r"[\w.+-]+@sim\.example", "ADDR", finding.first.detail)
    detail = re.sub(r"\d+", "N", detail)
    return finding.first.invariant, detail


@dataclass
class Target:
    finding: Finding
    kept: list[int]  # steps of the seed's events still in the history
    n: int = 2
    done: bool = False
    shown: Break | None = None  # the break the kept history shows
    proposals: list[tuple[str, list[int]]] = field(default_factory=list)
    first_round: bool = True

    def propose(self) -> list[list[int]]:
        """This round's candidates: nothing at all first, then ddmin's subsets and complements."""
        if self.first_round:
            self.first_round = False
            self.proposals = [("subset", [])] if self.kept else []
        else:
            n = min(self.n, len(self.kept))
            size = len(self.kept) / n
            chunks = [self.kept[round(i * size) : round((i + 1) * size)] for i in range(n)]
            self.proposals = [("subset", c) for c in chunks if c]
            if n > 2:
                self.proposals += [("complement", [s for s in self.kept if s not in c]) for c in chunks]
        if not self.proposals:
            self.done = True
        return [proposal for _, proposal in self.proposals]

    def hear(self, shown: list[Break | None]) -> None:
        for (kind, proposal), found in zip(self.proposals, shown, strict=True):
            if found is not None:
                self.kept, self.shown = proposal, found
                self.n = 2 if kind == "subset" else max(self.n - 1, 2)
                self.done = len(self.kept) <= 1
                return
        if self.n >= len(self.kept):
            self.done = True
        else:
            self.n = min(self.n * 2, len(self.kept))

    def events(self, kept: Sequence[int]) -> tuple[Event | None, ...]:
        own = dict(self.finding.history)
        return tuple(own.get(step) if step in kept else None for step in range(self.finding.steps))

    def shows(self, breaks: Sequence[Break]) -> Break | None:
        invariant, step = self.finding.first.invariant, self.finding.first.step
        same = [b for b in breaks if b.invariant == invariant and b.step <= step]
        return min(same, key=lambda b: b.step) if same else None


def shrink_findings(
    findings: list[Finding],
    schedule: Sequence[Event | None],
    folder: Path,
    budget_seconds: float,
    progress: Progress | None = None,
) -> list[Finding]:
    """One finding per kind of break, each with its history shrunk (within the time budget);
    the others of its kind are counted in its summary."""
    classes: dict[tuple[str, str], list[Finding]] = {}
    for finding in findings:
        classes.setdefault(break_class(finding), []).append(finding)
    representatives = []
    for members in classes.values():
        best = min(members, key=lambda f: (len(f.history), f.steps, f.seed))
        best.others = sorted({f.seed for f in members if f is not best})
        representatives.append(best)
    targets = [Target(f, [step for step, _ in f.history]) for f in representatives[:MAX_TARGETS]]
    deadline = time.monotonic() + budget_seconds
    world_number = 0
    while time.monotonic() < deadline:
        active = [t for t in targets if not t.done]
        if not active:
            break
        work: list[tuple[Target, int, LaneSpec]] = []
        for target in active:
            for index, proposal in enumerate(target.propose()):
                spec = LaneSpec(
                    target.finding.seed, f"s{target.finding.seed}r{world_number}c{len(work)}", target.events(proposal)
                )
                work.append((target, index, spec))
        work.sort(key=lambda item: item[0].finding.steps)  # short histories share short worlds
        verdicts: dict[tuple[int, int], Break | None] = {}
        for first in range(0, len(work), MAX_LANES_PER_WORLD):
            part = work[first : first + MAX_LANES_PER_WORLD]
            steps = max(t.finding.steps for t, _, _ in part)
            world_number += 1
            if progress is not None:
                progress(f"shrinking: round {world_number}, {len(part)} candidate histories, {steps} steps")
            run = run_world([spec for _, _, spec in part], list(schedule[:steps]), folder / f"round{world_number}")
            for (target, index, _), lane in zip(part, run.lanes, strict=True):
                verdicts[(id(target), index)] = target.shows(lane.breaks)
        for target in active:
            if target.proposals:
                target.hear([verdicts[(id(target), i)] for i in range(len(target.proposals))])
    shrunk = []
    for target in targets:
        own = dict(target.finding.history)
        finding = target.finding
        shown = target.shown or finding.first
        shrunk.append(
            Finding(
                finding.seed,
                shown,
                [(step, own[step]) for step in sorted(target.kept)],
                shown.step + 1,
                shrunk=target.done,
                replay_steps=finding.replay_steps,
                others=finding.others,
                shrink_state="shrunk" if target.done else "partly shrunk (time budget)",
            )
        )
    return shrunk + representatives[MAX_TARGETS:]
