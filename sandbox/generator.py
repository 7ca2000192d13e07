"""Generate large, realistic demo scenarios with known drift, and the results they must reconcile to.

Every contact-list membership is drawn into one *case* (both subscribed, ESP opt-out newer,
name differs, ...). The case decides what both worlds hold and which reconciliation result
the warehouse must compute for it; `expected` counts those per list link. The mapping from
case to result is `CASE_RESULTS`, kept beside the rules in DESIGN.md.
"""

from __future__ import annotations

import random
import unicodedata
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import idna
import polars as pl

from sandbox.scenario import TABLE_SCHEMAS, EspAccountSpec, EspListSpec, LinkSpec, Scenario

DOI_GRACE_DAYS = 14
BLOCKED_DOMAIN = "werbung-verboten.de"


def today_utc() -> datetime:
    """Midnight UTC today: generated worlds are relative to it, so DOI grace periods hold."""
    now = datetime.now(UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC)


ACCOUNTS = (
    EspAccountSpec(
        name="brand_main",
        type="mailchimp",
        api_key="sandbox0brandmain00000000000000-us1",
        lists=(EspListSpec("nl0001", "Newsletter"), EspListSpec("pn0001", "Produkt-News")),
    ),
    EspAccountSpec(
        name="brand_shop",
        type="mailchimp",
        api_key="sandbox0brandshop00000000000000-us1",
        lists=(EspListSpec("sh0001", "Shop-Newsletter"),),
    ),
)
LINKS = (
    LinkSpec("newsletter_main", "NL", "brand_main", "nl0001"),
    LinkSpec("product_news_main", "PN", "brand_main", "pn0001"),
    LinkSpec("shop_news", "SH", "brand_shop", "sh0001"),
)
CRM_LISTS = (
    ("NL", "Newsletter"),
    ("PN", "Produkt-News"),
    ("SH", "Shop-Newsletter"),
    ("VIP", "VIP-Kunden (nicht verknüpft)"),
)
LINK_SHARE = {"newsletter_main": 0.7, "product_news_main": 0.3, "shop_news": 0.25}

# membership cases: weight, and the result the reconciliation must give
CASE_WEIGHTS: dict[str, float] = {
    "both_subscribed": 0.65,
    "both_unsubscribed": 0.05,
    "esp_optout_newer": 0.04,
    "crm_optout_newer": 0.03,
    "crm_resubscribe_newer": 0.01,
    "esp_resubscribe_newer": 0.01,
    "name_differs": 0.03,
    "salutation_differs": 0.01,
    "crm_only_subscribed": 0.04,
    "crm_only_unsubscribed": 0.01,
    "esp_only_known_contact": 0.02,
    "hard_bounce": 0.01,
    "soft_bounce": 0.02,
    "pending_doi_within_grace": 0.005,
    "pending_doi_past_grace": 0.005,
    "equal_time_esp_optout": 0.005,
    "equal_time_crm_optout": 0.005,
    "mixed_case": 0.03,
    "idn_domain": 0.02,
}
CASE_RESULTS: dict[str, str] = {
    "both_subscribed": "in_sync",
    "both_unsubscribed": "in_sync",
    "esp_optout_newer": "esp_newer",
    "crm_optout_newer": "conflict",  # the CRM's opt-out is newer: recommended unsubscribe at the ESP
    "crm_resubscribe_newer": "conflict",  # recommended start_doi, never a plain subscribe
    "esp_resubscribe_newer": "esp_newer",
    "name_differs": "conflict",
    "salutation_differs": "conflict",
    "crm_only_subscribed": "not_in_esp",
    "crm_only_unsubscribed": "in_sync",
    "esp_only_known_contact": "new_in_list",
    "hard_bounce": "esp_newer",
    "soft_bounce": "in_sync",
    "pending_doi_within_grace": "in_sync",
    "pending_doi_past_grace": "conflict",
    "equal_time_esp_optout": "esp_newer",  # equal times: the opt-out wins
    "equal_time_crm_optout": "conflict",  # equal times: the opt-out wins, recommended unsubscribe
    "mixed_case": "in_sync",
    "idn_domain": "in_sync",
    # contact-level drift
    "blocklisted": "blocked",
    "blocked_domain": "blocked",
    "invalid_email": "invalid_email",
    "email_changed": "email_changed",
    "esp_only_signup": "new_contact",
}
# contact-level drift rates
RATE_BLOCKLISTED = 0.005
RATE_INVALID = 0.005
RATE_DUPLICATE = 0.01
RATE_EMAIL_CHANGED = 0.01
RATE_BLOCKED_DOMAIN = 0.003
RATE_ESP_ONLY_SIGNUP = 0.03

FIRST_NAMES = (
    "Anna",
    "Bernd",
    "Claudia",
    "Dieter",
    "Elke",
    "Frank",
    "Gabi",
    "Heinz",
    "Ines",
    "Jürgen",
    "Katrin",
    "Lukas",
    "Maria",
    "Nils",
    "Olga",
    "Peter",
    "Renate",
    "Stefan",
    "Tanja",
    "Uwe",
    "Vera",
    "Wolfgang",
    "Yvonne",
    "Zoe",
    "Jörg",
    "Sören",
    "Büşra",
    "Łukasz",
    "Émile",
    "Ana",
)
LAST_NAMES = (
    "Müller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Meyer",
    "Wagner",
    "Becker",
    "Schulz",
    "Hoffmann",
    "Schäfer",
    "Koch",
    "Bauer",
    "Richter",
    "Klein",
    "Wolf",
    "Schröder",
    "Neumann",
    "Schwarz",
    "Zimmermann",
    "Braun",
    "Krüger",
    "Hofmann",
    "Hartmann",
    "Lange",
    "Weiß",
    "Yılmaz",
    "Nowak",
    "Öztürk",
    "Groß",
)
DOMAINS = ("beispiel.de", "mail-firma.de", "posteo.example.org", "kunde.at", "web-shop.ch", "online.de")
IDN_DOMAINS = ("müller-bau.de", "bäckerei-köhler.de", "straße-café.at")
INVALID_ADDRESSES = (
    "{local}@@{domain}",
    "{local} at {domain}",
    "{local}@{domain}.",
    "{local}",
    "{local}..x@{domain}",
    "@{domain}",
)
SALUTATIONS = ("Frau", "Herr", "Divers")
CRM_USERS = ("crm:j.weber", "crm:a.klein", "crm:import", "web:anmeldeformular", "telefon:service")


def shout(address: str) -> str:
    """Upper-case the ASCII letters only: 'ß'.upper() is 'SS', a different address."""
    return "".join(char.upper() if char.isascii() else char for char in address)


def ascii_fold(text: str) -> str:
    replaced = text.replace("ä", "ae").replace("ö", "oe").replace("ü", "ue").replace("ß", "ss")
    replaced = replaced.replace("Ä", "Ae").replace("Ö", "Oe").replace("Ü", "Ue")
    return unicodedata.normalize("NFKD", replaced).encode("ascii", "ignore").decode("ascii")


@dataclass
class Person:
    contact_id: int
    first_name: str
    last_name: str
    salutation: str
    crm_email: str
    esp_email: str


class Columns:
    """Column-wise accumulation of one scenario table (fast at a million rows)."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.data: dict[str, list[Any]] = {column: [] for column in TABLE_SCHEMAS[table]}

    def add(self, **row: Any) -> None:
        for column, values in self.data.items():
            values.append(row.get(column))

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.data, schema=TABLE_SCHEMAS[self.table])


def generate_scenario(
    contacts: int = 10_000,
    seed: int = 42,
    campaigns: int = 2,
    reference_time: datetime | None = None,
    doi_grace_days: int = DOI_GRACE_DAYS,
) -> Scenario:
    """A demo world of `contacts` CRM contacts with known drift and its expected counts.

    Times are relative to `reference_time` (default: midnight UTC today); pending double
    opt-ins inside and past the grace period hold when it is reconciled within two days.
    """
    if contacts < 1:
        raise ValueError("contacts must be at least 1")
    rng = random.Random(seed)
    ref = reference_time or today_utc()
    tables = {name: Columns(name) for name in TABLE_SCHEMAS}
    expected: dict[str, Counter[str]] = {link.id: Counter() for link in LINKS}
    esp_list_of = {link.id: (link.esp_account, link.esp_list_id) for link in LINKS}
    soft_bouncers: set[str] = set()

    def expect(link_id: str, email: str, contact_id: int | None, case: str, result: str) -> None:
        expected[link_id][result] += 1
        tables["expected_results"].add(link_id=link_id, email=email, contact_id=contact_id, case=case, result=result)

    def moment(max_days_back: int = 1000, min_days_back: int = 30) -> datetime:
        seconds = rng.randint(min_days_back * 86400, max_days_back * 86400)
        return ref - timedelta(seconds=seconds)

    def later(base: datetime, min_days: int = 2, max_days: int = 20) -> datetime:
        return base + timedelta(seconds=rng.randint(min_days * 86400, max_days * 86400))

    def add_crm_assignment(contact_id: int, list_id: str, status: str, at: datetime) -> None:
        tables["crm_assignments"].add(
            contact_id=contact_id,
            list_id=list_id,
            status=status,
            status_changed_at=at,
            status_set_by=rng.choice(CRM_USERS),
            task=None,
        )

    def add_esp_member(
        link_id: str, person: Person, status: str, at: datetime, edited_at: datetime | None = None, **overrides: Any
    ) -> None:
        """A member whose status began `at`: a subscriber opted in then (Mailchimp's
        timestamp_opt); `edited_at`, a later profile edit, moves only last_changed."""
        account, list_id = esp_list_of[link_id]
        email = overrides.pop("email", person.esp_email)
        signup = at - timedelta(minutes=rng.randint(1, 600)) if status == "subscribed" else at
        if status not in ("subscribed", "pending"):
            signup = at - timedelta(days=rng.randint(1, 400))
        tables["esp_members"].add(
            account=account,
            list_id=list_id,
            email=email,
            status=status,
            last_changed=edited_at or at,
            first_name=overrides.get("first_name", person.first_name),
            last_name=overrides.get("last_name", person.last_name),
            salutation=overrides.get("salutation", person.salutation),
            timestamp_signup=signup,
            timestamp_opt=at if status == "subscribed" else None if status == "pending" else signup,
            ip_opt=f"192.0.2.{rng.randint(1, 254)}",
            unsubscribe_reason="N/A (Unsubscribed via campaign link)" if status == "unsubscribed" else None,
        )

    def person(contact_id: int) -> Person:
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        local = f"{ascii_fold(first)}.{ascii_fold(last)}.{contact_id}".lower()
        email = f"{local}@{rng.choice(DOMAINS)}"
        return Person(contact_id, first, last, rng.choice(SALUTATIONS), email, email)

    case_names = list(CASE_WEIGHTS)
    case_weights = list(CASE_WEIGHTS.values())
    next_contact_id = contacts + 1
    blocked_domain_used = False

    for contact_id in range(1, contacts + 1):
        p = person(contact_id)
        roll = rng.random()
        contact_case = None
        if roll < RATE_INVALID:
            contact_case = "invalid_email"
            local = p.crm_email.split("@")[0]
            p.crm_email = rng.choice(INVALID_ADDRESSES).format(local=local, domain=p.crm_email.split("@")[1])
        elif roll < RATE_INVALID + RATE_BLOCKLISTED:
            contact_case = "blocklisted"
        elif roll < RATE_INVALID + RATE_BLOCKLISTED + RATE_EMAIL_CHANGED:
            contact_case = "email_changed"
        elif roll < RATE_INVALID + RATE_BLOCKLISTED + RATE_EMAIL_CHANGED + RATE_BLOCKED_DOMAIN:
            contact_case = "blocked_domain"
            p.crm_email = p.esp_email = f"{p.crm_email.split('@')[0]}@{BLOCKED_DOMAIN}"
        links = [link for link in LINKS if rng.random() < LINK_SHARE[link.id]]
        if not links and contact_case is None and rng.random() < 0.5:
            links = [LINKS[0]]
        modified = moment()
        if contact_case == "email_changed":
            old_email = p.esp_email
            p.crm_email = f"{p.crm_email.split('@')[0]}.neu@{rng.choice(DOMAINS)}"
            changed_at = moment(25, 3)
            tables["crm_email_history"].add(
                contact_id=contact_id, email=old_email, valid_from=moment(), valid_to=changed_at
            )
            modified = changed_at
        cases_of_contact: dict[str, str] = {}
        for link in links:
            if contact_case is not None:
                case = contact_case
            else:
                case = case_names[rng.choices(range(len(case_names)), case_weights)[0]]
            cases_of_contact[link.id] = case
        if any(case == "mixed_case" for case in cases_of_contact.values()):
            local, _, domain = p.crm_email.partition("@")
            p.crm_email = f"{local.title()}@{shout(domain)}"
        if any(case == "idn_domain" for case in cases_of_contact.values()):
            unicode_domain = rng.choice(IDN_DOMAINS)
            ascii_domain = idna.encode(unicode_domain, uts46=True).decode("ascii")
            local = p.crm_email.split("@")[0]
            p.crm_email = f"{local}@{unicode_domain}"
            p.esp_email = f"{local}@{ascii_domain}" if rng.random() < 0.5 else p.crm_email
        tables["crm_contacts"].add(
            contact_id=contact_id,
            email=p.crm_email,
            first_name=p.first_name,
            last_name=p.last_name,
            salutation=p.salutation,
            modified_at=modified,
        )
        if contact_case == "blocklisted":
            tables["crm_blocklist"].add(
                email=shout(p.crm_email), blocked_at=moment(60, 1), reason="Widerspruch per Telefon"
            )
        if contact_case == "blocked_domain":
            blocked_domain_used = True
        # a second CRM record of the same person in the first list; who speaks for the address:
        # - both records carry the ESP's name: names do not decide, the lowest id does (warning)
        # - only the original carries it: the name decides for the original
        # - the original's name differs from the ESP's, the duplicate's matches: the duplicate wins
        first_case = cases_of_contact.get(links[0].id) if links else None
        winner_by_name: dict[str, int] = {}
        if first_case in ("both_subscribed", "soft_bounce", "name_differs") and rng.random() < RATE_DUPLICATE:
            duplicate_id = next_contact_id
            next_contact_id += 1
            if first_case == "name_differs":
                duplicate_first = p.first_name[:1] + "."
                winner_by_name[links[0].id] = duplicate_id
            else:
                duplicate_first = p.first_name if rng.random() < 0.5 else "Zweitkontakt"
            tables["crm_contacts"].add(
                contact_id=duplicate_id,
                email=shout(p.crm_email),
                first_name=duplicate_first,
                last_name=p.last_name,
                salutation=p.salutation,
                modified_at=moment(),
            )
            tables["crm_assignments"].add(
                contact_id=duplicate_id,
                list_id=links[0].crm_list_id,
                status="subscribed",
                status_changed_at=moment(),
                status_set_by="crm:import",
                task=None,
            )
        if rng.random() < 0.05:
            add_crm_assignment(contact_id, "VIP", "subscribed", moment())

        for link in links:
            case = cases_of_contact[link.id]
            base = moment(1000, 40)
            crm_list = link.crm_list_id
            if case in ("both_subscribed", "mixed_case", "idn_domain", "soft_bounce"):
                add_crm_assignment(contact_id, crm_list, "subscribed", base)
                add_esp_member(link.id, p, "subscribed", base)
                if case == "soft_bounce":
                    soft_bouncers.add(p.esp_email)
            elif case == "both_unsubscribed":
                add_crm_assignment(contact_id, crm_list, "unsubscribed", base)
                add_esp_member(link.id, p, "unsubscribed", later(base))
            elif case == "esp_optout_newer":
                add_crm_assignment(contact_id, crm_list, "subscribed", base)
                add_esp_member(link.id, p, "unsubscribed", ref - timedelta(days=3, seconds=rng.randint(0, 86400)))
            elif case == "crm_optout_newer":
                opted_out = later(base)
                add_crm_assignment(contact_id, crm_list, "unsubscribed", opted_out)
                # half of them edited their profile at the ESP since: no newer subscribe for that
                edited = later(opted_out, 1, 5) if rng.random() < 0.5 else None
                add_esp_member(link.id, p, "subscribed", base, edited_at=edited)
            elif case == "crm_resubscribe_newer":
                add_crm_assignment(contact_id, crm_list, "subscribed", later(base))
                add_esp_member(link.id, p, "unsubscribed", base)
            elif case == "esp_resubscribe_newer":
                add_crm_assignment(contact_id, crm_list, "unsubscribed", base)
                add_esp_member(link.id, p, "subscribed", later(base))
            elif case == "name_differs":
                add_crm_assignment(contact_id, crm_list, "subscribed", base)
                add_esp_member(link.id, p, "subscribed", base, first_name=p.first_name[:1] + ".")
            elif case == "salutation_differs":
                add_crm_assignment(contact_id, crm_list, "subscribed", base)
                other = rng.choice([s for s in SALUTATIONS if s != p.salutation])
                add_esp_member(link.id, p, "subscribed", base, salutation=other)
            elif case in ("crm_only_subscribed", "invalid_email"):
                add_crm_assignment(contact_id, crm_list, "subscribed", base)
            elif case == "crm_only_unsubscribed":
                add_crm_assignment(contact_id, crm_list, "unsubscribed", base)
            elif case == "esp_only_known_contact":
                add_esp_member(link.id, p, "subscribed", base)
            elif case == "hard_bounce":
                add_crm_assignment(contact_id, crm_list, "subscribed", base)
                add_esp_member(link.id, p, "cleaned", ref - timedelta(days=19, hours=rng.randint(1, 20)))
            elif case in ("pending_doi_within_grace", "pending_doi_past_grace"):
                days = (
                    rng.randint(1, max(doi_grace_days - 3, 1))
                    if case == "pending_doi_within_grace"
                    else rng.randint(doi_grace_days + 3, doi_grace_days + 40)
                )
                subscribed_at = ref - timedelta(days=days, seconds=rng.randint(0, 3600))
                add_crm_assignment(contact_id, crm_list, "subscribed", subscribed_at)
                add_esp_member(link.id, p, "pending", subscribed_at + timedelta(minutes=2))
            elif case == "equal_time_esp_optout":
                add_crm_assignment(contact_id, crm_list, "subscribed", base)
                add_esp_member(link.id, p, "unsubscribed", base)
            elif case == "equal_time_crm_optout":
                add_crm_assignment(contact_id, crm_list, "unsubscribed", base)
                add_esp_member(link.id, p, "subscribed", base)
            elif case in ("blocklisted", "blocked_domain", "email_changed"):
                # email_changed: the former address is at the ESP, the CRM holds the new one
                add_crm_assignment(contact_id, crm_list, "subscribed", base)
                add_esp_member(link.id, p, "subscribed", base)
            result = CASE_RESULTS[case]
            speaker = winner_by_name.get(link.id, contact_id)
            if speaker != contact_id:
                result = "in_sync"  # the duplicate's name matches the ESP's and it is subscribed
            expect(link.id, p.crm_email, speaker, case, result)

    if blocked_domain_used:
        tables["crm_blocklist"].add(email=f"*@{shout(BLOCKED_DOMAIN)}", blocked_at=ref, reason="Domain gesperrt")

    # people who signed up at the ESP and are unknown to the CRM
    for index in range(int(contacts * RATE_ESP_ONLY_SIGNUP)):
        link = rng.choice(LINKS)
        p = person(10_000_000 + index)
        add_esp_member(link.id, p, "subscribed", moment(200, 2))
        expect(link.id, p.esp_email, None, "esp_only_signup", "new_contact")

    members = tables["esp_members"].frame()
    _add_campaigns(tables, members, rng, campaigns, soft_bouncers, ref, seed)

    crm_lists = Columns("crm_lists")
    for list_id, name in CRM_LISTS:
        crm_lists.add(list_id=list_id, name=name)
    frames = {name: columns.frame() for name, columns in tables.items()}
    frames["crm_lists"] = crm_lists.frame()
    frames["esp_members"] = members
    return Scenario(
        name=f"demo-{contacts}",
        description=f"Generated demo world: {contacts} CRM contacts, seed {seed}, as of {ref:%Y-%m-%d}.",
        reference_time=ref,
        accounts=list(ACCOUNTS),
        links=list(LINKS),
        tables=frames,
        expected={link: dict(sorted(counts.items())) for link, counts in expected.items()},
    )


def _add_campaigns(
    tables: dict[str, Columns],
    members: pl.DataFrame,
    rng: random.Random,
    campaigns: int,
    soft_bouncers: set[str],
    ref: datetime,
    rng_seed: int,
) -> None:
    """Sent campaigns per ESP list, with recipients and their opens, clicks and bounces."""
    for account in ACCOUNTS:
        for esp_list in account.lists:
            in_list = members.filter((pl.col("account") == account.name) & (pl.col("list_id") == esp_list.id))
            for number in range(campaigns):
                send_time = ref - timedelta(days=20 - number * (15 // max(campaigns - 1, 1)))
                campaign_id = f"{esp_list.id}c{number + 1:02d}"
                more = random.Random(f"{rng_seed}:{account.name}:{campaign_id}")
                site = f"https://{account.name.replace('_', '-')}.example.com"
                tables["esp_campaigns"].add(
                    account=account.name,
                    campaign_id=campaign_id,
                    list_id=esp_list.id,
                    title=f"{esp_list.name} {number + 1}",
                    subject_line=f"Neuigkeiten aus dem {esp_list.name}",
                    status="sent",
                    send_time=send_time,
                )
                for row in in_list.iter_rows(named=True):
                    status, changed = row["status"], row["last_changed"]
                    was_subscribed = status == "subscribed" or (
                        status in ("unsubscribed", "cleaned") and changed > send_time
                    )
                    if not was_subscribed or row["timestamp_signup"] > send_time:
                        continue
                    delivery = "sent"
                    if status == "cleaned" and number == 0:
                        delivery = "hard"
                    elif row["email"] in soft_bouncers and number == campaigns - 1:
                        delivery = "soft"
                    unsubscribed_at = None
                    if status == "unsubscribed" and number == campaigns - 1 and changed > send_time:
                        unsubscribed_at = changed
                    # one delivered recipient in 500 marks the mailing as spam (an abuse report)
                    complained_at = None
                    if delivery == "sent" and more.random() < 0.002:
                        complained_at = min(send_time + timedelta(minutes=more.randint(30, 3 * 24 * 60)), ref)
                    tables["esp_recipients"].add(
                        account=account.name,
                        campaign_id=campaign_id,
                        email=row["email"],
                        status=delivery,
                        unsubscribed_at=unsubscribed_at,
                        complained_at=complained_at,
                    )
                    if delivery != "sent":
                        tables["esp_activity"].add(
                            account=account.name,
                            campaign_id=campaign_id,
                            email=row["email"],
                            action="bounce",
                            timestamp=send_time + timedelta(minutes=5),
                            bounce_type=delivery,
                        )
                        continue
                    if rng.random() < 0.35:
                        opened = send_time + timedelta(minutes=rng.randint(5, 4000))
                        first_click = opened + timedelta(seconds=rng.randint(5, 300)) if rng.random() < 0.25 else None
                        # opens again (some weeks later) and clicks on several links: drawn from a
                        # generator of their own, so the rest of the world stays as it was
                        for when, action, url in _reactions(more, opened, first_click, site, number, ref):
                            tables["esp_activity"].add(
                                account=account.name,
                                campaign_id=campaign_id,
                                email=row["email"],
                                action=action,
                                timestamp=when,
                                url=url,
                            )


LINK_PATHS = ("neuheiten", "filialen", "gutschein", "impressum")


def _reactions(
    rng: random.Random, opened: datetime, first_click: datetime | None, site: str, number: int, now: datetime
) -> list[tuple[datetime, str, str | None]]:
    """One recipient's reactions to a mailing after its first open: more opens (some the same
    day, some weeks later) and, when it clicked, clicks on one to three links, now and then one
    twice. Nothing later than `now`."""
    reactions: list[tuple[datetime, str, str | None]] = [(opened, "open", None)]
    for _ in range(rng.choice((0, 0, 0, 1, 1, 2, 4))):
        days = 35 if rng.random() < 0.15 else 2
        reactions.append((opened + timedelta(minutes=rng.randint(10, days * 24 * 60)), "open", None))
    if first_click is not None:
        urls = [f"{site}/angebot/{number + 1}"] + [
            f"{site}/{path}" for path in rng.sample(LINK_PATHS, rng.randint(0, 2))
        ]
        for index, url in enumerate(urls):
            when = first_click + timedelta(seconds=index * rng.randint(5, 120))
            reactions.append((when, "click", url))
            if rng.random() < 0.2:
                reactions.append((when + timedelta(minutes=rng.randint(1, 600)), "click", url))
    # one reaction of a kind a moment: the ESP reports two at one time as one
    unique = {(when, action): (when, action, url) for when, action, url in reactions if when <= now}
    return list(unique.values())
