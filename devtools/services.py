"""The project-owned PostgreSQL, Redis and Kafka: `roomfeed services up|down|status`.

This module owns the server processes that `roomfeed services up` starts under the data folder
(`<data_dir>/postgres`, `<data_dir>/redis`, `<data_dir>/kafka`): their files, pid files and logs.
`down` stops exactly those processes (found through their pid files), never anything else.
A service named by DATABASE_URL, REDIS_URL or KAFKA_BOOTSTRAP is external and left alone.
The servers themselves (devtools.postgres, devtools.redis, devtools.kafka) each have an explicit
lifecycle (`init`/`start`/`wait_ready`/`stop`/`kill`), so a test can run a private instance on free
ports in a temp folder, kill -9 it and start it again on the same data.
"""

from __future__ import annotations

import argparse
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from devtools.kafka import KafkaBroker, resolve_kafka_jars
from devtools.postgres import PostgresServer
from devtools.processes import ServiceError, file_lock
from devtools.redis import RedisServer
from roomfeed.settings import SERVICES, Settings, external_services

log = logging.getLogger("devtools.services")

SERVICE_NAMES = SERVICES


def _port_of(url: str, default: int) -> int:
    return urlsplit(url if "//" in url else f"//{url}").port or default


def project_servers(settings: Settings) -> dict[str, PostgresServer | RedisServer | KafkaBroker]:
    """The project-owned instances for the services the environment does not name."""
    external = external_services()
    servers: dict[str, PostgresServer | RedisServer | KafkaBroker] = {}
    root = settings.data_dir
    if not external["postgres"]:
        servers["postgres"] = PostgresServer(root / "postgres", _port_of(settings.database_url, 5432))
    if not external["redis"]:
        servers["redis"] = RedisServer(root / "redis", _port_of(settings.redis_url, 6379))
    if not external["kafka"]:
        port = _port_of(settings.kafka_bootstrap, 9092)
        # The controller listens one port below the broker's (59091 beside 59092).
        servers["kafka"] = KafkaBroker(root / "kafka", port, port - 1, partitions=settings.kafka_partitions)
    return servers


def _url_of(name: str, settings: Settings) -> str:
    return {
        "postgres": settings.database_url,
        "redis": settings.redis_url,
        "kafka": settings.kafka_bootstrap,
    }[name]


def _server_url(server: PostgresServer | RedisServer | KafkaBroker) -> str:
    return server.bootstrap() if isinstance(server, KafkaBroker) else server.url()


def _bring_up(name: str, server: PostgresServer | RedisServer | KafkaBroker) -> None:
    if server.is_running():
        try:
            server.wait_ready(timeout=60)
            return
        except ServiceError:
            log.warning("%s is running but does not answer; restarting it", name)
            server.stop()
    log.info("starting %s (%s) in %s", name, _server_url(server), server.data_dir)
    server.start()
    server.wait_ready()


def up(settings: Settings) -> dict[str, str]:
    """Start (once) and wait for the project-owned services; returns service name → URL for all three."""
    servers = project_servers(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(settings.data_dir / "services.lock"):
        with ThreadPoolExecutor(max_workers=len(servers) or 1) as pool:
            futures = {name: pool.submit(_bring_up, name, server) for name, server in servers.items()}
            errors = []
            for name, future in futures.items():
                try:
                    future.result()
                except Exception as exc:
                    errors.append(f"{name}: {exc}")
        if errors:
            raise ServiceError("\n".join(errors))
    urls = {name: _url_of(name, settings) for name in SERVICE_NAMES}
    urls.update({name: _server_url(server) for name, server in servers.items()})
    return urls


def down(settings: Settings) -> None:
    """Stop the project-owned services that `up` started (by their pid files); nothing else."""
    servers = project_servers(settings)
    if not settings.data_dir.exists():
        return
    with (
        file_lock(settings.data_dir / "services.lock"),
        ThreadPoolExecutor(max_workers=len(servers) or 1) as pool,
    ):
        for future in [pool.submit(server.stop) for server in servers.values()]:
            future.result()


def status(settings: Settings) -> dict[str, str]:
    """Service name → `running`, `not answering`, `stopped` or `external`."""
    servers = project_servers(settings)
    states: dict[str, str] = {}
    for name in SERVICE_NAMES:
        server = servers.get(name)
        if server is None:
            states[name] = "external"
        elif not server.is_running():
            states[name] = "stopped"
        else:
            try:
                server.wait_ready(timeout=2)
                states[name] = "running"
            except ServiceError:
                states[name] = "not answering"
    return states


def cli_main(argv: list[str]) -> int:
    """`roomfeed services up|down|status` (argv is what follows `services`)."""
    parser = argparse.ArgumentParser(
        prog="roomfeed services", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument(
        "action",
        choices=["up", "down", "status", "jars"],
        help="start, stop or report the local services; `jars` only resolves Kafka's jars",
    )
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    try:
        if args.action == "jars":
            print(resolve_kafka_jars(settings.data_dir / "kafka" / "libs"))
            return 0
        if args.action == "up":
            urls = up(settings)
            states = status(settings)
        elif args.action == "down":
            down(settings)
            urls = {name: _url_of(name, settings) for name in SERVICE_NAMES}
            states = status(settings)
        else:
            urls = {name: _url_of(name, settings) for name in SERVICE_NAMES}
            states = status(settings)
    except ServiceError as exc:
        print(f"roomfeed services {args.action}: {exc}", file=sys.stderr)
        return 1
    for name in SERVICE_NAMES:
        print(f"{name:<9} {states[name]:<14} {urls[name]}")
    if args.action == "status":
        return 0 if all(s in ("running", "external") for s in states.values()) else 3
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(cli_main(sys.argv[1:]))
