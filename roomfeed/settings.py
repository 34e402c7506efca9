"""The one settings object: read once from the environment, passed everywhere.

Every field has a documented default (README's configuration table mirrors this list). When
DATABASE_URL, REDIS_URL or KAFKA_BOOTSTRAP is unset, the URL points at the project-owned local
instance that `roomfeed services up` starts in the data folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal, get_args

REPO_ROOT = Path(__file__).resolve().parent.parent

LOCAL_PG_PORT = 55432
LOCAL_REDIS_PORT = 56379
LOCAL_KAFKA_PORT = 59092


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


MIN_ARCHIVE_RETENTION_DAYS = 9
# How much held (provisional) alliance credit is paid back ahead of its confirmation (alliance.scheduler).
AllianceAdvance = Literal["none", "held", "trusted"]
ALLIANCE_ADVANCE_MODES: tuple[AllianceAdvance, ...] = get_args(AllianceAdvance)


class SettingsError(ValueError):
    """A setting the environment gives cannot be used; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    # Where services, models and reports live when run locally.
    data_dir: Path = field(default_factory=lambda: Path(_env("ROOMFEED_DATA_DIR", str(REPO_ROOT / ".data"))))
    database_url: str = f"postgresql://roomfeed@127.0.0.1:{LOCAL_PG_PORT}/roomfeed"
    redis_url: str = f"redis://127.0.0.1:{LOCAL_REDIS_PORT}/0"
    kafka_bootstrap: str = f"127.0.0.1:{LOCAL_KAFKA_PORT}"
    # Prefix of every topic and consumer group, so several deployments (or test runs) share a broker.
    kafka_prefix: str = "rf."
    kafka_partitions: int = 6
    # Copies of every topic roomfeed creates, and how many of them must have an event before the
    # producer's acks=all returns (so before ingest answers 202). 1 and 1 for one broker; 3 and 2 on a
    # cluster: one broker can die without losing or refusing an accepted event.
    kafka_replication_factor: int = 1
    kafka_min_insync_replicas: int = 1
    # Seconds ingest waits for the broker to acknowledge a batch (acks=all) before it answers 503
    # `kafka_unavailable` and claims nothing (the app retries the same event ids). 2.5 s keeps an app's
    # post under its usual 5 s timeout; raise it where the broker is known to be slow but healthy.
    kafka_ack_timeout_s: float = 2.5
    # Secret the platform's login signs viewer tokens with (HMAC-SHA256). Override in production.
    viewer_token_secret: str = "dev-viewer-secret-change-me"
    # Viewer-token keyring `kid:secret[,kid:secret...]` (the first signs, all verify; see
    # docs/security.md for rotation). Empty: the one secret above, under key id `k0`.
    viewer_token_keys: str = ""
    # Standard viewer tokens: JWTs verified against this JWKS (a file path or an http(s) URL; empty:
    # JWTs are not accepted), with these algorithms, and iss/aud checked when set.
    viewer_jwks: str = ""
    viewer_jwt_algorithms: str = "EdDSA,RS256,HS256"
    viewer_jwt_issuer: str = ""
    viewer_jwt_audience: str = ""
    # Secret attribution codes are signed with. Override in production.
    code_secret: str = "dev-code-secret-change-me"
    # Attribution-code keyring `kid:secret[,...]` with kids 0..255 (the first signs, all verify).
    # Empty: the one secret above, under key id 0 (what codes printed before key ids verify with).
    code_keys: str = ""
    public_base_url: str = "http://127.0.0.1:8000"
    # The QR landing page (GET /c/{code}) opens the app at this deep link (the code appended) and,
    # when no app answers, falls back to this web URL ("{code}" replaced; empty: the page itself
    # offers the web instructions).
    app_link_base: str = "roomfeed://c/"
    web_fallback_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    pg_pool_min: int = 0
    pg_pool_max: int = 10
    log_level: str = "INFO"
    # One JSON line per HTTP request (method, path, status, ms, request_id); off by default: the feed's
    # latency budget (docs/feed.md). Every other line of a request carries its request_id either way.
    access_log: bool = False
    # Largest request body accepted, in bytes (413 beyond it).
    max_body_bytes: int = 2_000_000
    # Token buckets (roomfeed/ratelimit.py): requests per second and burst, per viewer, per device
    # (X-Device-ID) and per merchant key; beyond them 429 with Retry-After. Operators are not limited.
    rate_viewer_per_s: float = 50.0
    rate_viewer_burst: int = 600
    rate_device_per_s: float = 50.0
    rate_device_burst: int = 600
    rate_merchant_per_s: float = 200.0
    rate_merchant_burst: int = 2_000
    # Days of the interaction log kept (events/archive.py drops older day partitions). Must cover the
    # trainer's window (14 days by default) and Kafka's retention (7 days: a replay of the topic
    # must meet event ids the archive still remembers); values below 9 are refused.
    archive_retention_days: int = 30
    # The alliance's clock (alliance/clock.py): simulated seconds per wall second and the wall time
    # (epoch s) where simulated day 0 starts. 1 and 0 in production; benchmarks compress a day.
    alliance_time_scale: float = 1.0
    alliance_clock_origin: float = 0.0
    # Held alliance credit paid back ahead of its confirmation while the contributor is live
    # (alliance.scheduler.advance_of): none, held (all of it) or trusted (sized by the evidence in).
    alliance_advance: str = "trusted"

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"ROOMFEED_PORT must be a TCP port (0 to 65535), got {self.port}")
        if not 1 <= self.kafka_min_insync_replicas <= self.kafka_replication_factor:
            raise SettingsError(
                "ROOMFEED_KAFKA_MIN_INSYNC_REPLICAS must be between 1 and ROOMFEED_KAFKA_REPLICATION_FACTOR "
                f"(got {self.kafka_min_insync_replicas} of {self.kafka_replication_factor})"
            )
        if not self.kafka_ack_timeout_s > 0:
            raise SettingsError(
                f"ROOMFEED_KAFKA_ACK_TIMEOUT_S must be greater than 0, got {self.kafka_ack_timeout_s}"
            )
        if not self.alliance_time_scale > 0:
            raise ValueError("ROOMFEED_ALLIANCE_TIME_SCALE must be greater than 0")
        if self.alliance_advance not in ALLIANCE_ADVANCE_MODES:
            raise SettingsError(
                f"ROOMFEED_ALLIANCE_ADVANCE must be one of {', '.join(ALLIANCE_ADVANCE_MODES)}, "
                f"got {self.alliance_advance!r}"
            )
        if self.archive_retention_days < MIN_ARCHIVE_RETENTION_DAYS:
            raise SettingsError(
                f"ROOMFEED_ARCHIVE_RETENTION_DAYS must be at least {MIN_ARCHIVE_RETENTION_DAYS} "
                "(Kafka keeps 7 days; a replay must not meet forgotten event ids)"
            )

    @classmethod
    def from_env(cls) -> Settings:
        """The settings the environment gives; SettingsError names the first variable that is wrong."""
        defaults = cls()
        values: dict[str, object] = {}
        for f in fields(cls):
            name = env_name(f.name)
            raw = os.environ.get(name)
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(name, raw, getattr(defaults, f.name))
        return cls(**values)  # type: ignore[arg-type]

    def topic(self, name: str) -> str:
        return f"{self.kafka_prefix}{name}"

    def group(self, name: str) -> str:
        return f"{self.kafka_prefix}{name}"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"


_ENV_NAMES = {"database_url": "DATABASE_URL", "redis_url": "REDIS_URL", "kafka_bootstrap": "KAFKA_BOOTSTRAP"}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def env_name(field_name: str) -> str:
    """The environment variable of a Settings field."""
    return _ENV_NAMES.get(field_name, "ROOMFEED_" + field_name.upper())


def _parse(name: str, raw: str, default: object) -> object:
    text = raw.strip()
    if isinstance(default, bool):
        if text.lower() not in (*_TRUE, *_FALSE):
            raise SettingsError(f"{name}={raw!r} is not a boolean (use 1 or 0)")
        return text.lower() in _TRUE
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if isinstance(default, float):
        try:
            value = float(text)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise SettingsError(f"{name}={raw!r} is not a finite number")
        return value
    if isinstance(default, Path):
        return Path(raw)
    return raw


# The services roomfeed runs on, and the variable that names each one outside the project's own.
SERVICES = ("postgres", "redis", "kafka")
_SERVICE_URLS = {"postgres": "DATABASE_URL", "redis": "REDIS_URL", "kafka": "KAFKA_BOOTSTRAP"}


def external_services() -> dict[str, bool]:
    """Which services the environment names (and so which `services up` must not start)."""
    return {name: bool(os.environ.get(_SERVICE_URLS[name])) for name in SERVICES}
