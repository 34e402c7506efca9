"""roomfeed plumbing: settings, PostgreSQL/Redis/Kafka clients, auth, HTTP shape, the ASGI app and the CLI.

The product's domains live beside this package (`rooms`, `events`, `ranking`, `alliance`, `feed`);
this package holds only what they all stand on.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("roomfeed")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
