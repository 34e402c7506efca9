"""The files an import reads: which kind of record each holds, and its lines as JSON objects.

A folder is read by file name (`merchants.jsonl`, `rooms.csv`, `interactions-2026-11.jsonl.gz`, ...:
the name starts with the kind; `.gz` files are read as they are); a single file the same way. JSONL: one JSON object per line. CSV: a
header row, then one record per row; an empty cell is an absent field, and the cells of the columns a
kind declares as numbers, flags or lists are converted first (a cell that does not convert stays
text, and the kind's validator says what is wrong with it, as the API would).

Line numbers are the file's own (1-based; in a CSV the header is line 1), so a report points at the
line a person opens in an editor.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import orjson

# Kinds of record, in the order an import writes them (each may refer to the ones before it).
KINDS: tuple[str, ...] = ("merchants", "stores", "staff", "products", "rooms", "interactions", "orders")
Format = Literal["jsonl", "csv"]
FORMATS: dict[str, Format] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
Cell = Callable[[str], Any]
Record = dict[str, Any]


class FileProblem(ValueError):
    """A file the import cannot read at all (unknown kind or format, unreadable header)."""


@dataclass(frozen=True)
class Source:
    kind: str
    path: Path
    format: Format

    @property
    def name(self) -> str:
        return self.path.name


def kind_of(path: Path) -> str | None:
    stem = path.name.split(".", 1)[0].lower()
    for kind in KINDS:
        if stem == kind or (stem.startswith(kind) and stem[len(kind)] in "-_"):
            return kind
    return None


def format_of(path: Path) -> Format | None:
    name = path.name.lower().removesuffix(".gz")
    for ext, fmt in FORMATS.items():
        if name.endswith(ext):
            return fmt
    return None


def find_sources(paths: Sequence[Path]) -> list[Source]:
    """The files to import under `paths` (folders are read one level deep), in import order."""
    found: list[Source] = []
    for path in paths:
        if path.is_dir():
            candidates = sorted(p for p in path.iterdir() if p.is_file() and format_of(p) is not None)
            found.extend(s for p in candidates if (s := _source(p, strict=False)) is not None)
        elif path.is_file():
            source = _source(path, strict=True)
            assert source is not None
            found.append(source)
        else:
            raise FileProblem(f"{path}: no such file or folder")
    return sorted(found, key=lambda s: (KINDS.index(s.kind), str(s.path)))


def _source(path: Path, *, strict: bool) -> Source | None:
    fmt = format_of(path)
    kind = kind_of(path)
    if fmt is None or kind is None:
        if strict:
            raise FileProblem(
                f"{path}: the name must start with one of {', '.join(KINDS)} "
                f"and end in {', '.join(FORMATS)} (or those and .gz; e.g. rooms.csv, interactions-11.jsonl.gz)"
            )
        return None
    return Source(kind, path, fmt)


# --- lines ------------------------------------------------------------------------------------


def read_records(
    source: Source, cells: Mapping[str, Cell] | None = None
) -> Iterator[tuple[int, Record | str]]:
    """(line number, the record or why the line is not one), blank lines skipped."""
    if source.format == "jsonl":
        return _jsonl(source.path)
    return _csv(source.path, cells or {})


def _open_bytes(path: Path) -> IO[bytes]:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]  # a GzipFile reads bytes as IO[bytes] does
    return path.open("rb")


def _jsonl(path: Path) -> Iterator[tuple[int, Record | str]]:
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    with _open_bytes(path) as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                record = loads(raw)
            except decode_error as exc:
                yield number, f"not JSON: {exc}"
                continue
            if type(record) is not dict:
                yield number, "a line must be a JSON object"
                continue
            yield number, record


def _csv(path: Path, cells: Mapping[str, Cell]) -> Iterator[tuple[int, Record | str]]:
    with io.TextIOWrapper(_open_bytes(path), encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise FileProblem(f"{path}: the header is not CSV: {exc}") from None
        columns = [name.strip() for name in header]
        if len(set(columns)) != len(columns) or "" in columns:
            raise FileProblem(f"{path}: the header must name each column once: {header}")
        convert = [cells.get(name) for name in columns]
        width = len(columns)
        start = reader.line_num + 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield start, f"not CSV: {exc}"
                start = reader.line_num + 1
                continue
            number, start = start, reader.line_num + 1
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != width:
                yield number, f"has {len(row)} cells, the header has {width}"
                continue
            record: Record = {}
            for name, cell, to_value in zip(columns, row, convert, strict=True):
                if cell == "":
                    continue
                record[name] = _converted(cell, to_value) if to_value is not None else cell
            yield number, record


def _converted(cell: str, to_value: Cell) -> Any:
    try:
        return to_value(cell)
    except (ValueError, TypeError):
        return cell  # the validator names the field and what it must be


# Cell converters for CSV columns.
def integer(cell: str) -> int:
    return int(cell.strip())


def number(cell: str) -> float | int:
    text = cell.strip()
    try:
        return int(text)
    except ValueError:
        return float(text)


def flag(cell: str) -> bool:
    text = cell.strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(cell)


def text_list(cell: str) -> list[str]:
    """A list in one cell: items separated by `|` (e.g. `skincare|serum`)."""
    return [item.strip() for item in cell.split("|")]


def count_lines(path: Path) -> int:
    """Lines in a file (for a progress bar's total), read in large blocks."""
    total = 0
    with _open_bytes(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            total += block.count(b"\n")
    return total
