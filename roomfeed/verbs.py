"""A CLI verb of `roomfeed`: its help line, its arguments and the command it runs (the composition
roots offer the domains' verbs as these; roomfeed/cli.py puts them on the command line)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from roomfeed.settings import Settings


@dataclass(frozen=True)
class Verb:
    help: str
    add_args: Callable[[argparse.ArgumentParser], None]
    command: Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int] | int]

    def run(self, settings: Settings, args: argparse.Namespace) -> int:
        result = self.command(settings, args)
        return result if isinstance(result, int) else asyncio.run(result)
