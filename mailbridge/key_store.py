"""Email keys kept from one sync to the next, so that only new addresses are validated again.

Most addresses take `email_key`'s fast path, a few hundred nanoseconds each in Arrow. The rest
(anything non-ASCII, Punycode, unusual characters, and every invalid address) go through
email_validator and the checks it lacks, about half a millisecond each: some 3 % of a
generated world, and at a million contacts and members tens of CPU-seconds a sync, spent on
the same addresses as the sync before. A sync's extraction keeps their results in a Parquet
file beside the warehouse (a file, not a table, so it serves any warehouse and never waits for
the warehouse's writer), and the next sync answers those addresses from it.

A result is only as good as the rules that made it. The file's name carries a fingerprint of
them: the source of `mailbridge/email_key.py`, the versions of email_validator and idna,
Python's Unicode version and email_validator's special-use domain names. When any of them
changes, the file is not read, every address is judged again, and the old file is removed.
An entry no sync has asked for in `KEEP_DAYS` days is dropped. A file that cannot be read is
passed over with a warning and written anew; one that cannot be written costs only the time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from importlib import metadata
from pathlib import Path

import email_validator
import pyarrow as pa
import pyarrow.parquet as pq

from mailbridge import email_key
from mailbridge.email_key import EmailKeyResult

LOG = logging.getLogger(__name__)

FILE_PREFIX = "email-keys-"
KEEP_DAYS = 30
SCHEMA = pa.schema(
    [("address", pa.string()), ("email_key", pa.string()), ("error", pa.string()), ("last_used", pa.date32())]
)


def rules_fingerprint() -> str:
    """What an email key's result depends on, as 16 hex digits."""
    parts = [
        hashlib.sha256(Path(email_key.__file__).read_bytes()).hexdigest(),
        metadata.version("email-validator"),
        metadata.version("idna"),
        unicodedata.unidata_version,
        ",".join(sorted(email_validator.SPECIAL_USE_DOMAIN_NAMES)),
    ]
    return hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()[:16]


class KeyStore:
    """The kept results of one folder: `get` answers from them, new results are added by
    item assignment, and `save` writes them back."""

    def __init__(self, folder: Path, today: date | None = None) -> None:
        self.folder = folder
        self.today = today or datetime.now(UTC).date()
        self.path = folder / f"{FILE_PREFIX}{rules_fingerprint()}.parquet"
        self.kept: dict[str, tuple[EmailKeyResult, date]] = {}
        self.used: set[str] = set()
        self.new: dict[str, EmailKeyResult] = {}

    def load(self) -> None:
        if not self.path.exists():
            return
        try:
            table = pq.read_table(self.path, schema=SCHEMA)
        except (OSError, pa.ArrowException) as error:
            LOG.warning("email keys kept in %s cannot be read (%s); judging every address again", self.path, error)
            return
        columns = table.to_pydict()
        self.kept = {
            address: (EmailKeyResult(key, error), used)
            for address, key, error, used in zip(
                columns["address"], columns["email_key"], columns["error"], columns["last_used"], strict=True
            )
        }

    def get(self, address: str) -> EmailKeyResult | None:
        found = self.kept.get(address)
        if found is None:
            return self.new.get(address)
        self.used.add(address)
        return found[0]

    def __setitem__(self, address: str, result: EmailKeyResult) -> None:
        self.new[address] = result

    def __len__(self) -> int:
        return len(self.kept.keys() | self.new.keys())

    def save(self) -> None:
        """Write the results back (atomically), less those unused for `KEEP_DAYS` days; remove
        the files of other rules."""
        if not self.new and not self.used:
            return
        oldest = self.today - timedelta(days=KEEP_DAYS)
        rows: dict[str, tuple[EmailKeyResult, date]] = {
            address: (result, used) for address, (result, used) in self.kept.items() if used >= oldest
        }
        rows.update((address, (self.kept[address][0], self.today)) for address in self.used)
        rows.update((address, (result, self.today)) for address, result in self.new.items())
        table = pa.table(
            {
                "address": list(rows),
                "email_key": [result.key for result, _ in rows.values()],
                "error": [result.error for result, _ in rows.values()],
                "last_used": [used for _, used in rows.values()],
            },
            schema=SCHEMA,
        )
        partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.partial")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, partial)
            os.replace(partial, self.path)
            for other in self.folder.glob(f"{FILE_PREFIX}*.parquet"):
                if other != self.path:
                    other.unlink(missing_ok=True)
        except OSError as error:
            partial.unlink(missing_ok=True)
            LOG.warning("email keys cannot be kept in %s (%s); the next sync judges them again", self.path, error)


@contextmanager
def kept_keys(folder: Path) -> Iterator[KeyStore]:
    """Answer `email_keys` from the results kept in `folder` while the block runs, and keep
    the new ones; the results are kept even when the block fails, since each is right."""
    store = KeyStore(folder)
    store.load()
    previous = email_key._kept
    email_key._kept = store
    try:
        yield store
    finally:
        email_key._kept = previous
        store.save()
