"""`roomfeed import`: a platform's history into roomfeed, file by file, then a first model.

Files are imported in the order of their kinds (merchants, stores, staff, products, rooms,
interactions, orders), each as a whole: every line is read with its domain's rules (the API's own
readers), references are checked against what is in the database (including files imported just
before), and only a file without a rejected line is written, in one transaction, through its domain's
bulk path. Ids that already exist are left as they are, so importing the same files twice changes
nothing. Then, when interactions were imported, the ranking trainer trains on them and its promotion
gate decides, as for any round of `roomfeed train`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

import asyncpg
from redis.asyncio import Redis

from bulk.files import Cell, Record, Source, count_lines, flag, integer, number, read_records, text_list
from bulk.report import FileReport, ImportReport
from events.backfill import ArchiveBackfill, oldest_kept_ms, read_past_event
from events.schema import Event, Rejection
from events.vocabulary import FIELDS, FieldKind
from roomfeed.errors import ValidationFailed
from roomfeed.progress import Progress
from roomfeed.settings import Settings
from roomfeed.validation import Body
from rooms.backfill import ID_FIELD, READERS, CatalogBackfill, Imported, Kind
from rooms.directory import RoomDirectory
from rooms.inputs import read_order
from rooms.orders import OrderBook, OrderIn

log = logging.getLogger("roomfeed.bulk.import")

DAY_MS = 24 * 3600 * 1000
BATCH = 20_000  # interactions per COPY

# Times in a record that --shift-to-now moves, and their unit (ms per unit).
TIME_FIELDS = {
    "ts": 1,
    "ordered_at": 1,
    "created_at": 1000,
    "scheduled_at": 1000,
    "started_at": 1000,
    "ended_at": 1000,
}
# Orders go in as if a key with this id reported them (orders.recorded_by).
IMPORT_KEY_ID = "import"

# CSV columns that are not text.
_CATALOG_CELLS: dict[str, Cell] = {
    "price": number,
    "created_at": number,
    "scheduled_at": number,
    "started_at": number,
    "ended_at": number,
    "tags": text_list,
}
_KIND_CELL: dict[FieldKind, Cell] = {
    FieldKind.COUNT: integer,
    FieldKind.FLAG: flag,
    FieldKind.AMOUNT: number,
    FieldKind.VERSION: integer,
}
_EVENT_CELLS: dict[str, Cell] = {
    "ts": integer,
    "v": integer,
    **{f.name: _KIND_CELL[f.kind] for fields in FIELDS.values() for f in fields if f.kind in _KIND_CELL},
}
CELLS: dict[str, dict[str, Cell]] = {
    "merchants": _CATALOG_CELLS,
    "stores": _CATALOG_CELLS,
    "staff": _CATALOG_CELLS,
    "products": _CATALOG_CELLS,
    "rooms": _CATALOG_CELLS,
    "interactions": _EVENT_CELLS,
    "orders": {"quantity": integer, "unit_price": number, "amount": number, "ordered_at": integer},
}


@dataclass(frozen=True)
class ImportOptions:
    shift_to_now: bool = False  # sample data: move every time by whole days so the newest is today
    train: bool = True
    batch: int = BATCH


@dataclass
class FirstModel:
    """What training on the imported history gave (ranking.train.TrainingRound's fields)."""

    version: str
    promoted: bool
    seconds: float
    metrics: dict[str, float]


Trainer = Callable[[int], Awaitable[FirstModel | str]]


class Importer:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        redis: Redis,
        options: ImportOptions = ImportOptions(),
        trainer: Trainer | None = None,
        orders: OrderBook | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.options = options
        self.catalog = CatalogBackfill(pool)
        self.directory = RoomDirectory(pool, redis)
        self.trainer = trainer
        self.orders = orders or OrderBook(pool)
        self.shift_ms = 0
        self.newest_event_ms: int | None = None

    async def run(self, sources: Sequence[Source]) -> ImportReport:
        report = ImportReport()
        if self.options.shift_to_now:
            self.shift_ms = shift_to_today(sources)
        imported_events = False
        for source in sources:
            started = time.perf_counter()
            if source.kind == "interactions":
                file_report = await self._interactions(source)
                imported_events |= file_report.imported and file_report.lines > 0
            elif source.kind in READERS:
                file_report = await self._catalog(source)
            else:
                file_report = await self._orders(source)
            file_report.seconds = time.perf_counter() - started
            file_report.sort()
            log.info(
                "file imported" if file_report.imported else "file rejected",
                extra={
                    "fields": {
                        "file": str(source.path),
                        "lines": file_report.lines,
                        "new": file_report.new,
                        "already": file_report.already,
                        "rejected": file_report.rejected_count,
                    }
                },
            )
            report.files.append(file_report)
        if not self.options.train or self.trainer is None:
            report.model_note = "training not asked for (--no-train)"
        elif not imported_events or self.newest_event_ms is None:
            report.model_note = "no interactions were imported"
        elif not any(f.new for f in report.files):
            report.model_note = "nothing new was imported; the models stay as they are"
        else:
            outcome = await self.trainer(self.newest_event_ms + 1)
            if isinstance(outcome, str):
                report.model_note = outcome
            else:
                report.model = {
                    "version": outcome.version,
                    "promoted": outcome.promoted,
                    "seconds": round(outcome.seconds, 1),
                    "metrics": outcome.metrics,
                }
        return report

    # --- merchants, stores, staff, products, rooms -------------------------------------------------

    async def _catalog(self, source: Source) -> FileReport:
        kind: Kind = source.kind  # type: ignore[assignment]  # run() hands only READERS kinds here
        report = FileReport(source.name, kind)
        reader, id_field = READERS[kind], ID_FIELD[kind]
        records: list[tuple[int, Imported]] = []
        first_line: dict[str, int] = {}
        for number_, record in self._records(source, report):
            try:
                imported = reader(record)
            except ValidationFailed as exc:
                report.reject_fields(number_, exc.fields or {"record": str(exc)})
                continue
            key = getattr(imported, id_field)
            if key in first_line:
                report.reject(number_, f"appears again (first on line {first_line[key]})", id_field)
                continue
            first_line[key] = number_
            records.append((number_, imported))
        fresh = await self._check_references(kind, records, report)
        if report.imported:
            report.new = await self.catalog.write(kind, fresh)
            report.already = len(records) - report.new
        return report

    async def _check_references(
        self, kind: Kind, records: list[tuple[int, Imported]], report: FileReport
    ) -> list[Imported]:
        """The records to write: owners must exist; an id that exists must be the same merchant's
        (then it is left as it is)."""
        id_field = ID_FIELD[kind]
        ids = [getattr(r, id_field) for _, r in records]
        existing = await self.catalog.owners(kind, ids)
        owners = sorted({getattr(r, "merchant_id", None) or "" for _, r in records})
        merchants = await self.catalog.owners("merchants", owners)
        stores = (
            await self.catalog.owners("stores", sorted({getattr(r, "store_id", "") for _, r in records}))
            if kind == "staff"
            else {}
        )
        fresh: list[Imported] = []
        for line, r in records:
            merchant_id = getattr(r, "merchant_id", None)
            if kind == "staff":
                store_owner = stores.get(getattr(r, "store_id", ""))
                if store_owner is None:
                    report.reject(line, "is not a known store (import its store first)", "store_id")
                    continue
                if merchant_id is not None and merchant_id != store_owner:
                    report.reject(line, "is not the merchant of this store", "merchant_id")
                    continue
                merchant_id = store_owner
            elif kind != "merchants" and merchant_id not in merchants:
                report.reject(line, "is not a known merchant (import the merchant first)", "merchant_id")
                continue
            own_id = getattr(r, id_field)
            if own_id in existing:
                if kind != "merchants" and existing[own_id] != merchant_id:
                    report.reject(line, "already belongs to another merchant", id_field)
                continue  # already there: left as it is
            fresh.append(r)
        return fresh

    # --- interactions ------------------------------------------------------------------------------

    async def _interactions(self, source: Source) -> FileReport:
        report = FileReport(source.name, "interactions")
        retention = self.settings.archive_retention_days
        now = int(time.time() * 1000)
        oldest = oldest_kept_ms(retention, now)
        archive = ArchiveBackfill(self.pool, retention)
        await archive.open(now)
        batch: list[tuple[int, Event]] = []
        valid = 0
        newest: int | None = None
        try:
            with Progress(
                f"import {source.name}", count_lines(source.path), unit="line", unit_scale=True
            ) as bar:
                for number_, record in read_records(source, CELLS["interactions"]):
                    report.lines += 1
                    if isinstance(record, str):
                        report.reject(number_, record)
                        continue
                    self.shift(record)
                    event = read_past_event(record, now, oldest, retention)
                    if isinstance(event, Rejection):
                        report.reject(number_, _reason(event), event.field)
                        continue
                    batch.append((number_, event))
                    if len(batch) >= self.options.batch:
                        valid, newest = await self._flush(archive, batch, report, valid, newest)
                        bar.update(len(batch))
                        bar.note(rejected=report.rejected_count)
                        batch = []
                valid, newest = await self._flush(archive, batch, report, valid, newest)
                bar.update(len(batch))
        except BaseException:
            await archive.rollback()
            raise
        if report.imported:
            await archive.commit()
            report.already = valid - report.new
            if newest is not None:
                self.newest_event_ms = max(newest, self.newest_event_ms or newest)
        else:
            await archive.rollback()
            report.new = 0
        return report

    async def _flush(
        self,
        archive: ArchiveBackfill,
        batch: list[tuple[int, Event]],
        report: FileReport,
        valid: int,
        newest: int | None,
    ) -> tuple[int, int | None]:
        """Fill in each event's merchant (its room's), refuse unknown rooms, and archive the batch
        while the file has no rejected line (after one, the rest is only checked)."""
        if not batch:
            return valid, newest
        owners = await self.directory.merchant_of({event["room_id"] for _, event in batch})
        events: list[Event] = []
        for line, event in batch:
            merchant_id = owners.get(event["room_id"])
            if merchant_id is None:
                report.reject(line, "is not a known room (import its room first)", "room_id")
                continue
            event["merchant_id"] = merchant_id
            events.append(event)
            ts = event["ts"]
            newest = ts if newest is None or ts > newest else newest
        valid += len(events)
        if report.rejected_count == 0:
            report.new += await archive.write(events)
        return valid, newest

    # --- orders ------------------------------------------------------------------------------------

    async def _orders(self, source: Source) -> FileReport:
        """Past verified orders: each line is `merchant_id` plus the body of POST /v1/orders, read and
        checked by the order book as the route does (product, price, currency, room, deal), written in
        one transaction through `OrderBook.record_many` (idempotent by order id)."""
        report = FileReport(source.name, "orders")
        orders: list[tuple[str, OrderIn]] = []
        lines: list[int] = []
        for number_, record in self._records(source, report):
            merchant = Body(record)
            merchant_id = merchant.ident("merchant_id")
            try:
                order = read_order({k: v for k, v in record.items() if k != "merchant_id"})
            except ValidationFailed as exc:
                merchant.errors.update(exc.fields or {})
                order = None
            if merchant.errors or order is None:
                report.reject_fields(number_, merchant.errors)
                continue
            orders.append((merchant_id, order))
            lines.append(number_)
        known = await self.catalog.owners("merchants", sorted({m for m, _ in orders}))
        for line, (merchant_id, _) in zip(lines, orders, strict=True):
            if merchant_id not in known:
                report.reject(line, "is not a known merchant (import the merchant first)", "merchant_id")
        if not report.imported:
            return report
        created, refused = await self.orders.record_many(orders, IMPORT_KEY_ID)
        for position, refusal in refused:
            report.reject_fields(lines[position], refusal.fields or {"order_id": str(refusal)})
        if report.imported:
            report.new, report.already = created, len(orders) - created
        return report

    def _records(self, source: Source, report: FileReport) -> Iterator[tuple[int, Record]]:
        """The file's records with their line numbers (a bar on a terminal), counted in the report, times
        shifted; a line that is not a record is rejected there."""
        with Progress(f"import {source.name}", unit="line") as bar:
            for number_, record in read_records(source, CELLS[source.kind]):
                report.lines += 1
                bar.update()
                if isinstance(record, str):
                    report.reject(number_, record)
                    continue
                self.shift(record)
                yield number_, record

    def shift(self, record: Record) -> None:
        """Move the record's times by --shift-to-now's whole days (in place)."""
        if not self.shift_ms:
            return
        for name, unit_ms in TIME_FIELDS.items():
            value = record.get(name)
            if type(value) is int or type(value) is float:
                record[name] = value + self.shift_ms // unit_ms


def _reason(rejection: Rejection) -> str:
    """A rejection's message without its field's name in front (the report names the field)."""
    field = rejection.field
    message = rejection.message
    return message[len(field) + 1 :] if field and message.startswith(field + " ") else message


def shift_to_today(sources: Sequence[Source], now_ms: int | None = None) -> int:
    """Whole days (in ms) that move the newest time in the files to today (at most now); whole days
    keep times of day, and the same files shift by the same amount all day long."""
    newest = 0
    for source in sources:
        for _, record in read_records(source, CELLS.get(source.kind, {})):
            if isinstance(record, str):
                continue
            for name, unit_ms in TIME_FIELDS.items():
                value = record.get(name)
                if type(value) is int or type(value) is float:
                    newest = max(newest, int(value * unit_ms))
    if newest == 0:
        return 0
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    return max(0, (now - newest) // DAY_MS) * DAY_MS
