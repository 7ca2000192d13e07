"""Checks of the CRM's text values and task words (what the warehouse and the ESPs must never get),
and how its date-times are read."""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Mapping
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

# fields whose text goes to the ESP (names, salutation, mapped text fields): an ESP text field
# holds at most 255 characters (Mailchimp's merge fields), so a longer value cannot be written
ESP_TEXT_FIELDS = ("first_name", "last_name", "salutation")
ESP_TEXT_MAX_LENGTH = 255
# any other text (a list's name, who set a status, a blocklist reason)
TEXT_MAX_LENGTH = 4000
# no consent to email predates email (1971): an earlier status time is a placeholder (0001-01-01,
# 1900-01-01, the Unix epoch), not evidence; read as a time it would make any opt-out the older
EARLIEST_STATUS_TIME = datetime(1971, 1, 1, tzinfo=UTC)
# line breaks and tabs are text; every other control character (NUL above all) is not
ALLOWED_CONTROLS = frozenset("\t\n\r")
# the same rule as a regular expression (Arrow's RE2), for a column at a time: Unicode's control
# characters (category Cc: U+0000-U+001F and U+007F-U+009F) but the allowed ones
CONTROL_CHARACTERS = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"


def text_problem(value: str, max_length: int) -> str | None:
    """Why `value` is not usable text (a control character, or too long), or None."""
    for char in value:
        if unicodedata.category(char) == "Cc" and char not in ALLOWED_CONTROLS:
            return f"not text: it holds the control character U+{ord(char):04X}"
    if len(value) > max_length:
        return f"too long: {len(value)} characters, at most {max_length}"
    return None


def value_problems(
    entity: str,
    record: dict[str, Any],
    fields: Collection[str],
    esp_text_fields: Collection[str],
    task_values: Mapping[str, str],
) -> list[tuple[str, str]]:
    """(field, reason) for each text value of a CRM row that cannot be used; each is set to NULL.

    `fields` are the row's text fields; a task word the config does not map is refused too, so
    it is reported instead of being ignored without a word.
    """
    problems: list[tuple[str, str]] = []
    for name in fields:
        value = record.get(name)
        if not isinstance(value, str):
            continue
        limit = ESP_TEXT_MAX_LENGTH if name in esp_text_fields else TEXT_MAX_LENGTH
        reason = text_problem(value, limit)
        if reason is not None:
            record[name] = None
            problems.append((name, reason))
    changed_at = record.get("status_changed_at")
    if entity == "assignments" and isinstance(changed_at, datetime) and changed_at < EARLIEST_STATUS_TIME:
        record["status_changed_at"] = None
        problems.append(("status_changed_at", f"a placeholder, not a status time: {changed_at.isoformat()}"))
    task = record.get("task")
    if entity == "assignments" and isinstance(task, str):
        if not task.strip():
            record["task"] = None  # an empty task column asks for nothing
        elif task not in task_values:
            record["task"] = None
            problems.append(("task", f"crm.task_values has no entry for {task!r}; map it to an action"))
    return problems


def _as_datetime(value: Any) -> datetime | None:
    """A date-time as the CRM gave it (a string, a date or a datetime); raises ValueError."""
    if value is None or (isinstance(value, datetime)):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"not a date-time: {value!r}") from None
    if isinstance(value, date):
        return datetime.combine(value, time())
    raise ValueError(f"not a date-time: {value!r}")


def _as_utc(value: Any, zone: ZoneInfo) -> datetime | None:
    parsed = _as_datetime(value)
    if parsed is None:
        return None
    aware: datetime = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=zone)
    try:
        return aware.astimezone(UTC)
    except OverflowError:  # a placeholder such as 0001-01-01 in a zone east of UTC
        raise ValueError(f"not a date-time in range: {value!r}") from None
