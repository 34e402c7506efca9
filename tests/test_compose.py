"""docker-compose.yml and the Dockerfile agree with Settings: services, images, ports, env names."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from roomfeed.settings import REPO_ROOT, Settings

COMPOSE = REPO_ROOT / "docker-compose.yml"
APP_SERVICES = {
    "api": ["roomfeed", "serve"],
    "worker": ["roomfeed", "worker", "--metrics-port", "9101"],  # metrics on by default
    "trainer": ["roomfeed", "train", "--every", "10m", "--metrics-port", "9102"],
}
SETTINGS_ENV = ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())  # safe_load resolves the `<<` merge keys
    assert isinstance(loaded, dict)
    return loaded


def _resolve(value: object) -> str:
    """`${NAME:-default}` → default, as compose does when NAME is unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))


def _host_ports(service: dict[str, Any]) -> dict[int, int]:
    """container port → host port."""
    mapping = {}
    for entry in service.get("ports", []):
        *_, host, container = str(entry).split(":")
        mapping[int(container)] = int(host)
    return mapping


def test_compose_runs_the_infrastructure_and_the_three_processes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"kafka", "postgres", "redis", *APP_SERVICES}
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    assert services["postgres"]["image"] == "postgres:15"
    assert services["redis"]["image"] == "redis:7"
    for name, command in APP_SERVICES.items():
        assert services[name]["build"] == "."
        assert services[name]["command"] == command
        assert all(dep["condition"] == "service_healthy" for dep in services[name]["depends_on"].values())
    for name in services:
        assert "test" in services[name]["healthcheck"], f"{name} has no health check"


def test_kafka_is_a_single_kraft_node(compose: dict[str, Any]) -> None:
    env = compose["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(env["KAFKA_NODE_ID"] + "@kafka:")
    assert len(env["CLUSTER_ID"]) == 22


def test_host_ports_are_the_local_defaults(compose: dict[str, Any]) -> None:
    defaults = Settings()
    services = compose["services"]
    assert _host_ports(services["postgres"])[5432] == urlsplit(defaults.database_url).port
    assert _host_ports(services["redis"])[6379] == urlsplit(defaults.redis_url).port
    kafka_port = int(defaults.kafka_bootstrap.rsplit(":", 1)[1])
    assert kafka_port in _host_ports(services["kafka"]).values()
    assert f"127.0.0.1:{kafka_port}" in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert _host_ports(services["api"])[defaults.port] == defaults.port


def test_app_urls_point_at_the_compose_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    postgres_env = services["postgres"]["environment"]
    for name in APP_SERVICES:
        env = services[name]["environment"]
        db = urlsplit(env["DATABASE_URL"])
        assert (db.hostname, db.port, db.username, db.password, db.path) == (
            "postgres",
            5432,
            postgres_env["POSTGRES_USER"],
            postgres_env["POSTGRES_PASSWORD"],
            "/" + postgres_env["POSTGRES_DB"],
        )
        redis = urlsplit(env["REDIS_URL"])
        assert (redis.hostname, redis.port) == ("redis", 6379)
        assert f"//{env['KAFKA_BOOTSTRAP']}" in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]


def test_every_compose_env_var_is_one_settings_reads(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in [*SETTINGS_ENV, *(f"ROOMFEED_{f.name.upper()}" for f in fields(Settings))]:
        monkeypatch.delenv(var, raising=False)
    defaults = Settings.from_env()
    for name in APP_SERVICES:
        env = compose["services"][name]["environment"]
        for var in env:
            # A value no field has by default: if from_env reads `var`, some field changes.
            monkeypatch.setenv(var, "12345")
            assert Settings.from_env() != defaults, f"{name}: Settings.from_env does not read {var}"
            monkeypatch.delenv(var)
        for var, value in env.items():
            monkeypatch.setenv(var, _resolve(value))
        configured = Settings.from_env()  # every value parses (ints are ints)
        assert configured.database_url == env["DATABASE_URL"]
        assert configured.kafka_bootstrap == env["KAFKA_BOOTSTRAP"]
        assert configured.data_dir == Path(env["ROOMFEED_DATA_DIR"])
        for var in env:
            monkeypatch.delenv(var)


def test_dockerfile_builds_lightfm_the_way_that_works() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert 'pip install "pip<25.3"' in dockerfile
    assert "--no-use-pep517" in dockerfile and "lightfm==1.17" in dockerfile
    assert re.search(r"^FROM python:3\.11", dockerfile, re.M)
    assert 'CMD ["roomfeed", "serve"]' in dockerfile
