"""Progress of long commands (simulate, evaluate, train, import, benchmarks): one helper around tqdm.

    from roomfeed.progress import over, progress

    with progress("import interactions", total=n, unit="line") as bar:
        for chunk in chunks:
            ...
            bar.update(len(chunk))

    for day in over(days, "simulate", unit="day"): ...

A bar is drawn on stderr only when stderr is a terminal, so logs, pipes and CI output stay clean, and
only by the main process: the workers of a process pool (worlds' --jobs) share its terminal, and the
parent's own bar says how far the pool is. Nothing a command computes depends on it.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Iterable, Iterator, Sized
from types import TracebackType
from typing import Any, TextIO, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def shown(stream: TextIO | None = None) -> bool:
    """Whether bars are drawn: when the stream (stderr) is a terminal, in the main process."""
    if multiprocessing.parent_process() is not None:
        return False
    target = stream or sys.stderr
    try:
        return target.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


class Progress:
    """A bar for `total` steps (None when unknown: a counter and a rate). Quiet unless `shown()`."""

    def __init__(
        self,
        desc: str,
        total: float | None = None,
        *,
        unit: str = "it",
        unit_scale: bool = False,
        leave: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        target = stream or sys.stderr
        self._bar: Any = tqdm(
            total=total,
            desc=desc,
            unit=unit,
            unit_scale=unit_scale,
            leave=leave,
            file=target,
            disable=not shown(target),
            dynamic_ncols=True,
            mininterval=0.2,
        )

    @property
    def enabled(self) -> bool:
        return not self._bar.disable

    def update(self, steps: float = 1) -> None:
        self._bar.update(steps)

    def note(self, **fields: Any) -> None:
        """Figures shown after the bar (e.g. rejected=3, loss=0.21); only formatted when drawn."""
        if not self._bar.disable:
            self._bar.set_postfix(fields, refresh=False)

    def describe(self, desc: str) -> None:
        if not self._bar.disable:
            self._bar.set_description_str(desc, refresh=False)

    def reset(self, total: float | None = None) -> None:
        self._bar.reset(total=total)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def progress(
    desc: str, total: float | None = None, *, unit: str = "it", unit_scale: bool = False, leave: bool = True
) -> Progress:
    """A `Progress` bar on stderr (see the module docstring)."""
    return Progress(desc, total, unit=unit, unit_scale=unit_scale, leave=leave)


def over(
    items: Iterable[T], desc: str, *, total: float | None = None, unit: str = "it", leave: bool = True
) -> Iterator[T]:
    """Iterate `items` with a bar (total from len() when it has one)."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    with Progress(desc, total, unit=unit, leave=leave) as bar:
        for item in items:
            yield item
            bar.update()
