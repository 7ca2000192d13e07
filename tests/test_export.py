"""The CSV export: RFC 4180 and safe against formula injection."""

from __future__ import annotations

import csv
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from mailbridge.export import FORMULA_STARTS, safe_cell, write_csv

CORPUS = [
    "=1+1",
    "+49 30 1234",
    "-2+3",
    "@SUM(A1:A9)",
    "\t=cmd|' /C calc'!A0",
    '\r=HYPERLINK("http://x")',
    '=HYPERLINK("http://evil.example","klick")',
    'Müller, "Anna"',
    "zeile\r\nzwei",
    "harmlos@beispiel.de",
]


def test_the_corpus_survives_a_round_trip_and_nothing_starts_a_formula(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    write_csv(path, ["value"], [[cell] for cell in CORPUS])
    raw = path.read_bytes()
    assert raw.startswith(b"value\r\n")
    with path.open(encoding="utf-8", newline="") as handle:
        read = [row[0] for row in csv.reader(handle)][1:]
    assert len(read) == len(CORPUS)
    for original, cell in zip(CORPUS, read, strict=True):
        assert not cell.startswith(FORMULA_STARTS)
        assert cell == (("'" + original) if original.startswith(FORMULA_STARTS) else original)


@given(st.text(max_size=40))
def test_no_cell_can_start_a_formula(text: str) -> None:
    cell = safe_cell(text)
    assert not cell.startswith(FORMULA_STARTS)
    assert cell.endswith(text)
