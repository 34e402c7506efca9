"""Apache Kafka in KRaft mode without Docker: the broker's jars resolved through Maven (cached in
~/.m2), one node (`KafkaBroker`, broker and controller) or a cluster of them on one machine
(`KafkaCluster`), each able to be killed and started again on its own data.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import shutil
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from devtools.processes import (
    ServiceError,
    TerminatedServer,
    apt_install,
    ensure_port_free,
    file_lock,
    pid_alive,
    port_open,
    read_pid,
    run_coroutine,
    spawn,
    tail,
)
from roomfeed.settings import REPO_ROOT

log = logging.getLogger("devtools.kafka")

KAFKA_POM = REPO_ROOT / "infra" / "kafka" / "pom.xml"
KAFKA_LOG4J = REPO_ROOT / "infra" / "kafka" / "log4j2.properties"


def resolve_kafka_jars(libs_dir: Path) -> Path:
    """Copy the broker's runtime jars (infra/kafka/pom.xml) into `libs_dir` once; Maven caches them."""
    marker = libs_dir / ".complete"
    if marker.exists():
        return libs_dir
    if shutil.which("mvn") is None or shutil.which("java") is None:
        apt_install("maven", "openjdk-17-jre-headless")
    libs_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(libs_dir / ".lock"):
        if marker.exists():
            return libs_dir
        cmd = [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(KAFKA_POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs_dir}",
            "-DincludeScope=runtime",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ServiceError(f"resolving Kafka jars failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        marker.write_text("ok\n")
    return libs_dir


# JVM options for short-lived brokers (tests): C1 only and the serial collector start faster and
# burn far less CPU on a small, busy machine than the server defaults.
QUICK_START_JVM = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xshare:auto")


class KafkaBroker(TerminatedServer):
    """A KRaft Apache Kafka node (broker and controller in one JVM) in `data_dir`: on its own by
    default, or node `node_id` of a cluster whose controller quorum is `voters` (`KafkaCluster`)."""

    stop_timeout = 30.0

    def __init__(
        self,
        data_dir: Path,
        port: int,
        controller_port: int,
        *,
        libs_dir: Path | None = None,
        partitions: int = 6,
        heap: str = "512m",
        jvm_options: tuple[str, ...] = ("-XX:+UseG1GC",),
        node_id: int = 1,
        voters: str | None = None,
        cluster_id: str | None = None,
        replication: int = 1,
    ) -> None:
        self.node_id = node_id
        self.voters = voters or f"{node_id}@127.0.0.1:{controller_port}"
        self.cluster_id = cluster_id
        # Copies of Kafka's own topics (consumer offsets, transaction state): the cluster's size.
        self.replication = replication
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.controller_port = controller_port
        # Private test brokers share the project's jars instead of copying 100 MB each.
        self.libs_dir = Path(libs_dir).resolve() if libs_dir else self.data_dir / "libs"
        self.partitions = partitions
        self.heap = heap
        self.jvm_options = jvm_options
        self.log_dirs = self.data_dir / "log-dirs"
        self.properties_path = self.data_dir / "server.properties"
        self.pid_path = self.data_dir / "kafka.pid"
        self.stdout_path = self.data_dir / "kafka.out"
        self._formatted = self.data_dir / ".formatted"

    def ensure_installed(self) -> None:
        resolve_kafka_jars(self.libs_dir)

    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_properties(self) -> None:
        props = {
            "node.id": str(self.node_id),
            "process.roles": "broker,controller",
            "controller.quorum.voters": self.voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.log_dirs),
            "num.partitions": str(self.partitions),
            "offsets.topic.replication.factor": str(self.replication),
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": str(self.replication),
            "transaction.state.log.min.isr": str(min(2, self.replication)),
            "share.coordinator.state.topic.replication.factor": str(self.replication),
            "share.coordinator.state.topic.min.isr": str(min(2, self.replication)),
            "default.replication.factor": str(self.replication),
            "group.initial.rebalance.delay.ms": "0",
            # Test consumers use short session timeouts to notice a dead peer quickly.
            "group.min.session.timeout.ms": "1000",
            # After a kill -9 the new incarnation cannot register until the old one's session
            # expires (default 9 s); a short session makes a crashed broker serve again sooner.
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            "auto.create.topics.enable": "true",
            "delete.topic.enable": "true",
        }
        text = "# Written by devtools.services; rewritten on every start.\n"
        text += "".join(f"{k}={v}\n" for k, v in props.items())
        self.properties_path.write_text(text)

    def _java(self, main: str, *args: str, quick: bool = False) -> list[str]:
        cmd = [
            "java",
            f"-Xmx{self.heap}",
            *(QUICK_START_JVM if quick else self.jvm_options),
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.data_dir}",
        ]
        if KAFKA_LOG4J.exists():
            cmd.append(f"-Dlog4j2.configurationFile={KAFKA_LOG4J}")
        return [*cmd, "-cp", f"{self.libs_dir}/*", main, *args]

    def init(self) -> None:
        """Resolve jars, write server.properties, format the storage once."""
        self.ensure_installed()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_properties()
        if self._formatted.exists():
            return
        if self.log_dirs.exists():  # an interrupted format
            shutil.rmtree(self.log_dirs)
        # URL-safe base64 may start with "-": passed as --cluster-id=ID so it is never read as an option.
        cluster_id = self.cluster_id or new_kafka_cluster_id()
        cmd = self._java(
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={cluster_id}",
            "-c",
            str(self.properties_path),
            quick=True,
        )
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=self.data_dir)
        if proc.returncode != 0:
            raise ServiceError(f"formatting Kafka storage failed:\n{proc.stdout}\n{proc.stderr}")
        self._formatted.write_text(cluster_id + "\n")

    def pid(self) -> int | None:
        pid = read_pid(self.pid_path)
        return pid if pid is not None and pid_alive(pid, "kafka.Kafka", str(self.properties_path)) else None

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self) -> None:
        if self.is_running():
            return
        self.init()
        for port in (self.port, self.controller_port):
            ensure_port_free(port)
        spawn(
            self._java("kafka.Kafka", str(self.properties_path)),
            self.stdout_path,
            self.pid_path,
            cwd=self.data_dir,
        )

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Return once a real metadata request answers with this broker in the cluster."""
        deadline = time.monotonic() + timeout
        while True:
            if port_open(self.port) and self._metadata_answers():
                return
            if not self.is_running():
                raise ServiceError(
                    f"kafka on port {self.port} is not running; {self.stdout_path}:\n{tail(self.stdout_path)}\n"
                    f"{self.data_dir / 'server.log'}:\n{tail(self.data_dir / 'server.log')}"
                )
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"kafka on port {self.port} did not answer in {timeout}s:\n"
                    f"{tail(self.data_dir / 'server.log')}"
                )
            time.sleep(0.2)

    def _metadata_answers(self) -> bool:
        return run_coroutine(lambda: kafka_answers(self.bootstrap()))


def new_kafka_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


class KafkaCluster:
    """`size` KRaft nodes (each broker and controller) on one machine: one cluster id, one quorum.

    For tests and benchmarks of roomfeed on a Kafka cluster (replication, a broker killed): every
    node is a `KafkaBroker` that can be killed and started again on its own data."""

    def __init__(
        self,
        data_dir: Path,
        ports: list[tuple[int, int]],
        *,
        libs_dir: Path | None = None,
        partitions: int = 6,
        heap: str = "384m",
        jvm_options: tuple[str, ...] = QUICK_START_JVM,
    ) -> None:
        voters = ",".join(f"{n}@127.0.0.1:{controller}" for n, (_, controller) in enumerate(ports, 1))
        cluster_id = new_kafka_cluster_id()
        self.brokers = [
            KafkaBroker(
                Path(data_dir) / f"node{n}",
                port,
                controller,
                libs_dir=libs_dir,
                partitions=partitions,
                heap=heap,
                jvm_options=jvm_options,
                node_id=n,
                voters=voters,
                cluster_id=cluster_id,
                replication=min(3, len(ports)),
            )
            for n, (port, controller) in enumerate(ports, 1)
        ]

    def bootstrap(self) -> str:
        return ",".join(broker.bootstrap() for broker in self.brokers)

    def start(self) -> None:
        """Format and start every node (in parallel: a quorum forms only once most of them run)."""
        with ThreadPoolExecutor(len(self.brokers)) as pool:
            list(pool.map(lambda broker: broker.init(), self.brokers))
        for broker in self.brokers:
            broker.start()

    def wait_ready(self, timeout: float = 120.0) -> None:
        for broker in self.brokers:
            broker.wait_ready(timeout)

    def kill(self) -> None:
        for broker in self.brokers:
            broker.kill()


async def kafka_answers(bootstrap: str, timeout_ms: int = 3000) -> bool:
    """True when the broker answers a metadata request and lists at least one broker."""
    from aiokafka.admin import AIOKafkaAdminClient

    aiokafka_log = logging.getLogger("aiokafka")
    level = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)  # a probe that fails is expected while the broker boots
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    try:
        await asyncio.wait_for(admin.start(), timeout_ms / 1000)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout_ms / 1000)
        return bool(cluster.get("brokers"))
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
        aiokafka_log.setLevel(level)
