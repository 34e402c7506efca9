"""One settings object from the environment, with typed values and documented defaults."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import pytest

from roomfeed import ratelimit
from roomfeed.settings import Settings


def test_environment_overrides_are_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db:5432/x")
    monkeypatch.setenv("ROOMFEED_PORT", "9001")
    monkeypatch.setenv("ROOMFEED_RATE_VIEWER_PER_S", "7.5")
    monkeypatch.setenv("ROOMFEED_DATA_DIR", "/tmp/rf-data")
    settings = Settings.from_env()
    assert settings.database_url == "postgresql://u@db:5432/x"
    assert settings.port == 9001
    assert settings.rate_viewer_per_s == 7.5
    assert settings.data_dir == Path("/tmp/rf-data")


def test_every_setting_is_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    env_names = {
        "database_url": "DATABASE_URL",
        "redis_url": "REDIS_URL",
        "kafka_bootstrap": "KAFKA_BOOTSTRAP",
    }
    missing = [
        env_names.get(f.name, "ROOMFEED_" + f.name.upper())
        for f in fields(Settings)
        if env_names.get(f.name, "ROOMFEED_" + f.name.upper()) not in readme
    ]
    assert not missing, f"settings missing from README's configuration table: {missing}"


def test_rate_limits_come_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VIEWER_LIMIT", "DEVICE_LIMIT", "MERCHANT_KEY_LIMIT"):
        monkeypatch.setattr(ratelimit, name, getattr(ratelimit, name))  # restored after the test
    ratelimit.configure(
        replace(Settings(), rate_viewer_per_s=3.0, rate_viewer_burst=9, rate_merchant_burst=11)
    )
    assert ratelimit.Limit(per_second=3.0, burst=9) == ratelimit.VIEWER_LIMIT
    assert ratelimit.MERCHANT_KEY_LIMIT.burst == 11
    buckets = ratelimit.buckets_for("viewer", viewer_id="v1", key_id=None, device_id=None)
    assert buckets == [("v:v1", ratelimit.Limit(per_second=3.0, burst=9))]


def test_min_insync_replicas_must_fit_the_replication_factor() -> None:
    assert Settings(kafka_replication_factor=3, kafka_min_insync_replicas=2).kafka_min_insync_replicas == 2
    for replicas, insync in ((1, 2), (3, 0), (3, 4)):
        with pytest.raises(ValueError, match="ROOMFEED_KAFKA_MIN_INSYNC_REPLICAS"):
            Settings(kafka_replication_factor=replicas, kafka_min_insync_replicas=insync)
