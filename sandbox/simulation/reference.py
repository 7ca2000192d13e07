"""The reference model: a few lines of plain Python over one seed's event history.

It knows the true order of events (their sequence number) and never looks at mailbridge's
rules or SQL. Its two claims:
- `must_not_be_subscribed`: the address is blocklisted, or its latest consent event
  anywhere is an opt-out (CRM phone opt-out, unsubscribe task, ESP unsubscribe, hard
  bounce, an executed manual unsubscribe);
- `must_stay_subscribed`: its latest consent event is a DOI confirmation at the ESP that
  is later than every opt-out by at least ORDERABLE_GAP on the clock (evidence both sides
  can order), and nothing but profile edits happened to the address since; an address a
  CRM user asked to remove (a delete task) is not claimed, nor a confirmation made before
  the sync → push → sync cycle that carried out an unsubscribe task word (the CRM keeps no
  time for a task word: the cycle dates it).
An address change carries the consent history to the new address, and an opt-out of the
former address after the change counts for the new one too (the same person: a CRM opt-out of
the address the CRM still holds after the ESP moved the member, or of a duplicate contact still
holding it); a subscribe of the former address does not (another contact may still hold it),
nor a hard bounce (it speaks of the address, not of the person). The link ends when the former
address is signed up or subscribed again (a subscription of its own, whose opt-outs are its
own) and when the last CRM contact of the new address is deleted (nothing ties the two any
more); an event at the former address still keeps the model from claiming the new one stays
subscribed. The former address is not claimed to stay subscribed (unsubscribing it is what an
address change asks for).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta

ORDERABLE_GAP = timedelta(seconds=2)


@dataclass(frozen=True)
class ConsentEvent:
    seq: int
    at: datetime
    kind: str  # optout | subscribe
    source: str
    doi: bool = False
    origin: str = ""  # the former address an opt-out was made at, for one counted at the new address
    cycle: int = 0  # the completed sync → push → sync cycles before it


@dataclass
class ReferenceModel:
    consent: dict[str, list[ConsentEvent]] = field(default_factory=dict)
    blocked: dict[str, int] = field(default_factory=dict)  # token → seq of the blocklist entry
    last_touch: dict[str, tuple[int, str]] = field(default_factory=dict)  # token → latest event of any kind
    pending_unsubscribes: dict[str, tuple[int, datetime]] = field(default_factory=dict)
    moved_away: set[str] = field(default_factory=set)  # former addresses: unsubscribing them is the rule
    moved_to: dict[str, str] = field(default_factory=dict)  # former address → the address it changed to
    # every address change ever made: an event at a former address is a touch of the new one
    moved_ever: dict[str, str] = field(default_factory=dict)
    # addresses a CRM user asked to remove from the list (a delete task): a standing instruction
    # the CRM keeps no time for, so no later confirmation can be ordered against it
    removals: set[str] = field(default_factory=set)
    # completed sync → push → sync cycles: an unsubscribe task word, which the CRM keeps no time
    # for, is carried out (and so dated) by the first one after it
    cycles: int = 0

    def record(self, seq: int, at: datetime, token: str, kind: str, source: str, *, doi: bool = False) -> None:
        """A consent event of the address. An opt-out also speaks for every address the person
        moved on to from it (a CRM opt-out of the address the CRM still holds after the ESP moved
        the member is theirs); a subscribe speaks only for its own address (another contact may
        still hold the former one), and keeps the model from claiming the others."""
        if kind == "subscribe":
            self.moved_to.pop(token, None)  # a subscription of its own
        for alias in self._moved_on(token):
            # a hard bounce says the address is undeliverable, nothing about the person's wish
            if alias == token or (kind == "optout" and source != "esp:hard_bounce"):
                origin = "" if alias == token else token
                self.consent.setdefault(alias, []).append(ConsentEvent(seq, at, kind, source, doi, origin, self.cycles))
        for alias in self._moved_on(token, self.moved_ever):
            self.touch(seq, alias, source, status_change=True)

    def signed_up(self, seq: int, token: str, source: str) -> None:
        """A signup at the address (a form, not yet confirmed): a subscription of its own starts."""
        self.moved_to.pop(token, None)
        for alias in self._moved_on(token, self.moved_ever):
            self.touch(seq, alias, source)

    def _moved_on(self, token: str, links: dict[str, str] | None = None) -> list[str]:
        links = self.moved_to if links is None else links
        chain = [token]
        while chain[-1] in links and links[chain[-1]] not in chain:
            chain.append(links[chain[-1]])
        return chain

    def touch(self, seq: int, token: str, source: str, *, status_change: bool = False) -> None:
        """Any event on the address; a later one keeps the model from claiming a kept subscribe."""
        if status_change or not source.startswith("esp:profile_edit"):
            self.last_touch[token] = (seq, source)

    def block(self, seq: int, at: datetime, token: str) -> None:
        self.blocked.setdefault(token, seq)
        self.touch(seq, token, "crm:blocklist")

    def carry(self, seq: int, at: datetime, old: str, new: str, source: str) -> None:
        """An address change: the person's consent history now speaks for the new address too."""
        # moved at the ESP, the CRM still holds the former address: deleting its last contact
        # there deletes the CRM's evidence carried here too
        carried = [
            dataclasses.replace(e, origin=e.origin or old) if source.startswith("esp:") else e
            for e in self.consent.get(old, [])
        ]
        self.consent[new] = sorted(self.consent.get(new, []) + carried, key=lambda e: e.seq)
        if old in self.blocked:
            self.blocked.setdefault(new, seq)
        self.moved_away.add(old)
        self.moved_to[old] = new
        self.moved_ever[old] = new
        self.touch(seq, old, source)
        self.touch(seq, new, source)

    def contact_deleted(self, seq: int, at: datetime, token: str, *, last_one: bool) -> None:
        """Deleting the last CRM contact of an address deletes the CRM's evidence of its consent,
        also where it counted for an address the person moved on to."""
        if last_one:
            self.consent[token] = [e for e in self.consent.get(token, []) if not e.source.startswith("crm:")]
            # nothing ties the address to the ones the person left any more
            for former in [former for former, new in self.moved_to.items() if new == token]:
                del self.moved_to[former]
            for alias in self._moved_on(token)[1:]:
                self.consent[alias] = [
                    e for e in self.consent.get(alias, []) if not (e.source.startswith("crm:") and e.origin == token)
                ]
        self.touch(seq, token, "crm:delete_contact")

    def removal_requested(self, seq: int, token: str, source: str) -> None:
        self.removals.add(token)
        self.touch(seq, token, source)

    def decided_unsubscribe(self, seq: int, at: datetime, token: str) -> None:
        """A manual unsubscribe counts once the next push runs, whatever changed in between: an
        opt-out is carried out on the state of the push."""
        self.touch(seq, token, "decide:unsubscribe")
        self.pending_unsubscribes[token] = (seq, at)

    def decided(self, seq: int, token: str, action: str) -> None:
        """Another decision for the address replaces a manual unsubscribe not yet pushed."""
        self.pending_unsubscribes.pop(token, None)
        self.touch(seq, token, f"decide:{action}")

    def cycle_completed(self) -> None:
        """A sync → push → sync cycle ran whole: the task words set before it were carried out."""
        self.cycles += 1

    def push_ran(self) -> None:
        for token, (seq, at) in self.pending_unsubscribes.items():
            self.consent.setdefault(token, []).append(ConsentEvent(seq, at, "optout", "decide:unsubscribe"))
        self.pending_unsubscribes.clear()

    # -- claims -------------------------------------------------------------------

    def must_not_be_subscribed(self, token: str) -> str | None:
        if token in self.blocked:
            return f"blocklisted at event #{self.blocked[token]}"
        events = self.consent.get(token)
        if events and events[-1].kind == "optout":
            latest = events[-1]
            return f"latest consent event is an opt-out ({latest.source}, event #{latest.seq})"
        return None

    def must_stay_subscribed(self, token: str) -> str | None:
        events = self.consent.get(token)
        if not events or token in self.blocked or token in self.moved_away or token in self.removals:
            return None
        latest = events[-1]
        if latest.kind != "subscribe" or not latest.doi:
            return None
        if self.last_touch.get(token, (latest.seq, ""))[0] != latest.seq:
            return None
        optouts = [e for e in events if e.kind == "optout"]
        if optouts and latest.at < max(e.at for e in optouts) + ORDERABLE_GAP:
            return None  # the clocks cannot order the confirmation after the opt-out
        if any(e.source.startswith("crm:task:") and e.cycle == latest.cycle for e in optouts):
            # an unsubscribe task word has no time in the CRM: only once a cycle carried it out
            # (the ESP dates its unsubscribe) can a confirmation be ordered after it
            return None
        return f"DOI confirmed at the ESP at {latest.at:%H:%M:%S} (event #{latest.seq}), after every opt-out"

    def tokens(self) -> set[str]:
        return set(self.consent) | set(self.blocked)
