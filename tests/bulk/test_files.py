"""The files an import reads: kinds by name, JSONL and CSV lines with their own line numbers."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from bulk.files import FileProblem, Source, find_sources, integer, number, read_records, text_list


def test_a_folder_is_read_by_kind_in_import_order(tmp_path: Path) -> None:
    for name in ("interactions-2026-11.jsonl.gz", "rooms.csv", "merchants.jsonl", "notes.txt", "x.csv"):
        (tmp_path / name).write_bytes(b"")
    assert [(s.kind, s.name) for s in find_sources([tmp_path])] == [
        ("merchants", "merchants.jsonl"),
        ("rooms", "rooms.csv"),
        ("interactions", "interactions-2026-11.jsonl.gz"),
    ]
    with pytest.raises(FileProblem, match="must start with one of"):
        find_sources([tmp_path / "x.csv"])


def test_csv_cells_are_typed_and_lines_keep_their_numbers(tmp_path: Path) -> None:
    path = tmp_path / "rooms.csv"
    path.write_text(
        "room_id,title,price,tags,started_at\n"
        'r1,"a title\nover two lines",12.5,a|b,1790000000\n'
        "\n"
        "r2,plain,twelve,,1790000001\n"
        "r3,short row\n"
    )
    cells = {"price": number, "tags": text_list, "started_at": integer}
    got = list(read_records(Source("rooms", path, "csv"), cells))
    assert got == [
        (
            2,
            {
                "room_id": "r1",
                "title": "a title\nover two lines",
                "price": 12.5,
                "tags": ["a", "b"],
                "started_at": 1790000000,
            },
        ),
        (5, {"room_id": "r2", "title": "plain", "price": "twelve", "started_at": 1790000001}),
        (6, "has 2 cells, the header has 5"),
    ]


def test_jsonl_lines_gzipped_or_not(tmp_path: Path) -> None:
    raw = b'{"a": 1}\n\n[1, 2]\n{"b": \n'
    (tmp_path / "one.jsonl").write_bytes(raw)
    with gzip.open(tmp_path / "two.jsonl.gz", "wb") as f:
        f.write(raw)
    for name in ("one.jsonl", "two.jsonl.gz"):
        got = list(read_records(Source("interactions", tmp_path / name, "jsonl")))
        assert got[0] == (1, {"a": 1})
        assert got[1] == (3, "a line must be a JSON object")
        assert got[2][0] == 4 and str(got[2][1]).startswith("not JSON")
