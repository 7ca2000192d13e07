"""The seeded whole-loop simulation: its parts, and a fixed set of seeds through the real loop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sandbox.simulation.events import NOOP, Event, EventGenerator, LaneView, shared_schedule
from sandbox.simulation.invariants import Break
from sandbox.simulation.reference import ReferenceModel
from sandbox.simulation.runner import Finding, simulate
from sandbox.simulation.shrink import Target

# the fixed seeds CI runs: a few shared steps, so the default `make test` stays well under 3 minutes
CI_SEEDS = range(1, 21)
CI_STEPS = 16

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_the_shared_schedule_is_fixed_and_prefix_stable() -> None:
    long, short = shared_schedule(60), shared_schedule(25)
    assert long[:25] == short
    assert long[0] == Event("sync_full")
    kinds = {event.kind for event in long if event is not None}
    assert {"sync_push", "fault_burst"} <= kinds
    # a burst is always followed by a sync → push → sync
    for index, event in enumerate(long[:-1]):
        if event is not None and event.kind == "fault_burst":
            assert long[index + 1] == Event("sync_push")


def test_a_seed_draws_the_same_events_from_the_same_state() -> None:
    view = LaneView(
        crm_contacts={"a0": ["subscribed"], "a1": ["unsubscribed"]},
        esp_members={"a0": "pending"},
        tokens=["a0", "a1", "a2"],
    )
    one, two = EventGenerator(7, ["abmelden"]), EventGenerator(7, ["abmelden"])
    drawn = [one.next_event(view) for _ in range(40)]
    assert drawn == [two.next_event(view) for _ in range(40)]
    assert len({event.kind for event in drawn}) >= 8


def test_the_latest_opt_out_anywhere_is_law() -> None:
    model = ReferenceModel()
    model.record(1, T0, "a0", "subscribe", "crm:staff")
    model.record(2, T0, "a0", "optout", "esp:unsubscribe")
    assert model.must_not_be_subscribed("a0")
    model.record(3, T0 + timedelta(seconds=1), "a0", "subscribe", "esp:doi_confirmed", doi=True)
    assert model.must_not_be_subscribed("a0") is None
    # one second apart: the clocks cannot order it, so no claim that it must be kept
    assert model.must_stay_subscribed("a0") is None


def test_a_doi_confirmed_well_after_the_opt_out_must_be_kept_until_something_else_happens() -> None:
    model = ReferenceModel()
    model.record(1, T0, "a0", "optout", "crm:phone")
    model.record(2, T0 + timedelta(seconds=30), "a0", "subscribe", "esp:doi_confirmed", doi=True)
    assert model.must_stay_subscribed("a0")
    model.touch(3, "a0", "esp:profile_edit")
    assert model.must_stay_subscribed("a0"), "a profile edit is not a consent event"
    model.touch(4, "a0", "esp:archive", status_change=True)
    assert model.must_stay_subscribed("a0") is None


def test_a_confirmation_is_ordered_after_an_unsubscribe_task_word_only_once_a_cycle_carried_it_out() -> None:
    # the CRM keeps no time for a task word: mailbridge carries it out at the next push after a
    # sync, and a DOI confirmed before that cannot be ordered after it (seed 535 of a thousand)
    model = ReferenceModel()
    model.record(1, T0, "a1", "optout", "crm:task:abmelden")
    model.record(2, T0 + timedelta(seconds=30), "a1", "subscribe", "esp:doi_confirmed", doi=True)
    assert model.must_stay_subscribed("a1") is None
    model.cycle_completed()
    model.record(3, T0 + timedelta(seconds=90), "a1", "subscribe", "esp:doi_confirmed", doi=True)
    assert model.must_stay_subscribed("a1")


def test_an_address_change_carries_the_opt_out_and_a_blocklist_entry_is_forever() -> None:
    model = ReferenceModel()
    model.record(1, T0, "a0", "optout", "crm:phone")
    model.carry(2, T0, "a0", "a0x1", "crm:email_change")
    assert model.must_not_be_subscribed("a0x1")
    model.block(3, T0, "a1")
    model.record(4, T0, "a1", "subscribe", "crm:staff")
    assert model.must_not_be_subscribed("a1")


def test_an_opt_out_of_the_former_address_after_a_move_counts_for_the_new_one() -> None:
    # the ESP moved the member and the person confirmed a DOI there; then the CRM, which still
    # holds the former address, took their opt-out by phone: it is the same person's
    model = ReferenceModel()
    model.record(1, T0, "a8x1", "subscribe", "crm:staff")
    model.carry(2, T0, "a8x1", "a8x3", "esp:address_change")
    model.record(3, T0 + timedelta(seconds=30), "a8x3", "subscribe", "esp:doi_confirmed", doi=True)
    assert model.must_stay_subscribed("a8x3")
    model.record(4, T0 + timedelta(seconds=31), "a8x1", "optout", "crm:phone")
    assert model.must_not_be_subscribed("a8x3")
    assert model.must_stay_subscribed("a8x3") is None


def subscribed_then_moved(old: str, new: str, source: str) -> ReferenceModel:
    """A model where `old` was subscribed in the CRM, then the address changed to `new`."""
    model = ReferenceModel()
    model.record(1, T0, old, "subscribe", "crm:staff")
    model.carry(2, T0, old, new, source)
    return model


def test_a_confirmation_of_the_former_address_does_not_speak_for_the_new_one() -> None:
    # a duplicate contact still holds the former address: its DOI there is not the mover's
    model = subscribed_then_moved("a5", "a5x1", "crm:email_change")
    model.record(3, T0 + timedelta(seconds=30), "a5", "subscribe", "esp:doi_confirmed", doi=True)
    assert model.must_stay_subscribed("a5x1") is None


def test_a_hard_bounce_of_the_former_address_does_not_speak_for_the_new_one() -> None:
    model = subscribed_then_moved("a6", "a6x1", "crm:email_change")
    model.record(3, T0, "a6", "optout", "esp:hard_bounce")
    assert model.must_not_be_subscribed("a6")
    assert model.must_not_be_subscribed("a6x1") is None
    model.record(4, T0, "a6", "optout", "esp:unsubscribe")
    assert model.must_not_be_subscribed("a6x1")


def test_deleting_the_last_contact_of_the_former_address_deletes_its_opt_out_at_the_new_one() -> None:
    # the ESP moved the member; the CRM contact still holding the former address opted out by
    # phone and was deleted before any sync saw it: no system holds that opt-out any more
    model = subscribed_then_moved("a4", "a4x2", "esp:address_change")
    model.record(3, T0, "a4", "optout", "crm:phone")
    assert model.must_not_be_subscribed("a4x2")
    model.contact_deleted(4, T0, "a4", last_one=True)
    assert model.must_not_be_subscribed("a4x2") is None


def test_a_crm_opt_out_made_before_the_esp_moved_the_member_goes_when_its_contact_is_deleted() -> None:
    # the opt-out was carried to the new address by the move, but only the deleted contact held it
    model = ReferenceModel()
    model.record(1, T0, "a2", "subscribe", "crm:staff")
    model.record(2, T0, "a2", "optout", "crm:phone")
    model.carry(3, T0, "a2", "a2x3", "esp:address_change")
    assert model.must_not_be_subscribed("a2x3")
    model.contact_deleted(4, T0, "a2", last_one=True)
    assert model.must_not_be_subscribed("a2x3") is None


def test_a_new_subscription_at_the_former_address_has_opt_outs_of_its_own() -> None:
    # signed up again (a form) or subscribed again after the person left: its opt-out is its own
    for again in ("signup", "subscribe"):
        model = subscribed_then_moved("a3", "a3x1", "esp:address_change")
        if again == "signup":
            model.signed_up(3, "a3", "esp:form_pending")
        else:
            model.record(3, T0, "a3", "subscribe", "esp:doi_confirmed", doi=True)
        model.record(4, T0, "a3", "optout", "esp:unsubscribe")
        assert model.must_not_be_subscribed("a3")
        assert model.must_not_be_subscribed("a3x1") is None
        # the event at the former address still keeps the model from claiming the new one
        assert model.last_touch["a3x1"][0] == 4


def test_deleting_the_last_contact_of_the_new_address_ends_its_link_to_the_former_one() -> None:
    model = subscribed_then_moved("a6", "a6x2", "crm:email_change")
    model.contact_deleted(3, T0, "a6x2", last_one=True)
    model.record(4, T0, "a6", "optout", "crm:phone")
    assert model.must_not_be_subscribed("a6x2") is None


def test_a_manual_unsubscribe_counts_once_a_push_ran_whatever_changed_since() -> None:
    model = ReferenceModel()
    model.record(1, T0, "a0", "subscribe", "crm:staff")
    model.decided_unsubscribe(2, T0, "a0")
    assert model.must_not_be_subscribed("a0") is None
    model.touch(3, "a0", "esp:profile_edit")  # the state changed: the unsubscribe still runs
    model.push_ran()
    assert model.must_not_be_subscribed("a0")


def test_a_later_decision_replaces_a_manual_unsubscribe_not_yet_pushed() -> None:
    model = ReferenceModel()
    model.record(1, T0, "a0", "subscribe", "crm:staff")
    model.decided_unsubscribe(2, T0, "a0")
    model.decided(3, "a0", "start_doi")
    model.push_ran()
    assert model.must_not_be_subscribed("a0") is None


def test_shrinking_finds_the_events_a_break_needs() -> None:
    history = [(step, Event("crm_optout", (f"a{step}", "0"))) for step in range(1, 12)]
    finding = Finding(3, Break("1", 12, 0, 3, "a4", "x"), history, 13, shrunk=False)
    target = Target(finding, [step for step, _ in history])
    needed = {4, 9}
    for _ in range(60):
        if target.done:
            break
        proposals = target.propose()
        if target.done:
            break
        shows = Break("1", 12, 0, 3, "a4", "x")
        target.hear([shows if needed <= set(p) else None for p in proposals])
    assert target.done and target.kept == [4, 9]
    assert [e.kind for e in target.events(target.kept) if e is not None] == ["crm_optout", "crm_optout"]
    assert all(e is None or e.kind != NOOP for e in target.events(target.kept))


@pytest.mark.simulation
def test_fixed_seeds_keep_every_invariant(tmp_path: Path) -> None:
    """The fixed seeds through the real loop (emulator, SQLite CRM, extraction, dbt, push).
    A failure prints each break with its seed and history; replay one with
    `mailbridge simulate --seed N --steps 16` (it shrinks the history)."""
    report = simulate(CI_SEEDS, CI_STEPS, folder=tmp_path, batch_size=len(CI_SEEDS), shrink=False)
    print(report.summary())
    assert len(report.kinds_covered) >= 12, report.kinds_covered
    assert not report.notes, report.notes
    assert not report.findings, report.summary()
