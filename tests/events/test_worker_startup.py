"""`roomfeed worker` starts on the events and alliance domains alone: the API's feed, ranking and
console (numba, LightFM, scipy) are not loaded, so a worker's start and restart do not pay for them
(~1.4 s of CPU before its first event on this host; docs/benchmarks.md, ingest).

The child processes are awaited, not waited for: tests/events' consumers share this event loop, and a
loop held for the seconds a child takes to import (longer on a loaded host) expires their group sessions."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import orjson

from roomfeed.settings import REPO_ROOT

# What the sinks never call: the API's domains and the libraries only they load.
NOT_FOR_THE_WORKER = (
    "feed",
    "ranking",
    "console",
    "bulk",
    "worlds",
    "simulator",
    "scipy",
    "numba",
    "lightfm",
)

_LOADED = """
import sys, orjson
from roomfeed.cli import build_parser
parser, handlers = build_parser(sys.argv[1])
parser.parse_args(sys.argv[1:])
print(orjson.dumps(sorted({m.split(".")[0] for m in sys.modules})).decode())
"""


async def _loaded_by(*argv: str) -> set[str]:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _LOADED,
        *argv,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await child.communicate()
    assert child.returncode == 0, err.decode()
    return set(orjson.loads(out))


async def test_worker_loads_only_the_domains_of_its_sinks() -> None:
    loaded = await _loaded_by("worker", "--sinks", "realtime,archive,alliance,heat")
    assert {"events", "alliance"} <= loaded
    assert loaded.isdisjoint(NOT_FOR_THE_WORKER), loaded & set(NOT_FOR_THE_WORKER)


async def test_the_other_domain_verbs_come_from_the_verbs_root() -> None:
    # roomfeed/cli_assembly.py: the domains the verbs drive, the world evaluation and the bulk import
    loaded = await _loaded_by("rebuild")
    assert {"feed", "ranking", "rooms", "worlds", "bulk"} <= loaded
