"""End-to-end fixtures: a real orchestrator process and real worker processes on 127.0.0.1.

Nothing here runs imagefleet in the test process: every component is started the way a user
starts it (`python -m imagefleet ...`), talks real HTTP on a free port and can be killed with
real signals. Each process writes its output to a log file under the test's temporary folder;
when a test fails, the tails of those logs are attached to its report.

The demo model and the API keys are made once per session (building the model costs seconds);
every fleet then starts from a copy of that database, so fleets never see each other's jobs.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import pytest

from imagefleet.client import ImageFleetClient
from imagefleet.protocol import AttemptView, JobView
from imagefleet.store import jobs as job_sql
from imagefleet.store.database import Database

DB_FILE = "imagefleet.db"
STARTUP_TIMEOUT = 60.0
STOP_GRACE_SECONDS = 8.0
WORKER_READY_LINE = "pulling from"
LOG_TAIL_CHARS = 6000

# Processes still running when the interpreter exits (a Ctrl-C that skipped fixture teardown)
# are killed here, so an interrupted test run never leaves workers burning the CPU.
_LIVE: set[ManagedProcess] = set()
_node_numbers = count()


@atexit.register
def _kill_leftovers() -> None:
    for process in list(_LIVE):
        process.kill()


def free_port() -> int:
    """A port nothing listens on right now (the orchestrator start retries if it is taken)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child: no stray IMAGEFLEET_* settings from the caller's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEFLEET_")}
    env["PYTHONUNBUFFERED"] = "1"  # log lines reach the file as they happen
    env.update(extra)
    return env


def run_cli(*args: str) -> str:
    """Runs one `python -m imagefleet` command to its end and returns its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "imagefleet", *args],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"imagefleet {' '.join(args)} exited with {done.returncode}:\n"
            f"{done.stdout}\n{done.stderr}"
        )
    return done.stdout


class ManagedProcess:
    """One child process with its stdout and stderr in a log file; stops itself on `stop()`."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log_file = log_path.open("ab")
        self.popen = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        _LIVE.add(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, timeout: float = STARTUP_TIMEOUT) -> None:
        """Waits until `text` appears in the log; fails early if the process exits first."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if not self.running:
                raise RuntimeError(
                    f"{self.name} exited with {self.popen.returncode} before logging "
                    f"{text!r}:\n{self.log()[-LOG_TAIL_CHARS:]}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not log {text!r} within {timeout}s")
            time.sleep(0.1)

    def send(self, sig: signal.Signals) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """The exit code; subprocess.TimeoutExpired if it is still running after `timeout`."""
        code = self.popen.wait(timeout=timeout)
        self._forget()
        return code

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> int:
        """SIGTERM, then SIGKILL if it has not exited after `grace` seconds."""
        if self.running:
            self.send(signal.SIGTERM)
        try:
            return self.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.popen.returncode

    def kill(self) -> None:
        if self.running:
            self.popen.kill()
        self.popen.wait()
        self._forget()

    def _forget(self) -> None:
        _LIVE.discard(self)
        if not self._log_file.closed:
            self._log_file.close()


@dataclass(frozen=True)
class FleetKeys:
    """Tokens made once per session: two clients (to test tenancy) and one worker key."""

    alice: str
    bob: str
    worker: str


@dataclass(frozen=True)
class FleetTemplate:
    """A data folder whose database already has the demo model and the keys registered."""

    data_dir: Path
    keys: FleetKeys


def _create_key(data_dir: Path, name: str, scope: str) -> str:
    """`keys create` prints the token alone on its last line."""
    output = run_cli(
        "keys", "create", "--name", name, "--scope", scope, "--data-dir", str(data_dir)
    )
    return output.strip().splitlines()[-1]


class Fleet:
    """An orchestrator process plus any number of worker processes, all on this machine.

    Each worker gets its own node id: the scheduler never gives a job back to a node where it
    failed, and several processes on one machine stand here for several machines.
    """

    def __init__(
        self, root: Path, template: FleetTemplate, *, lease_seconds: float, **settings: str
    ) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.data_dir.mkdir(parents=True)
        for file in template.data_dir.glob(f"{DB_FILE}*"):
            shutil.copy2(file, self.data_dir / file.name)
        self.keys = template.keys
        self.lease_seconds = lease_seconds
        self.settings = {
            "IMAGEFLEET_LEASE_SECONDS": str(lease_seconds),
            "IMAGEFLEET_REAPER_INTERVAL_SECONDS": "0.5",
            **{f"IMAGEFLEET_{name.upper()}": value for name, value in settings.items()},
        }
        self.url = ""
        self.worker_env: dict[str, str] = {}  # extra environment for workers started next
        self.orchestrator: ManagedProcess | None = None
        self.workers: list[ManagedProcess] = []
        self._clients: list[ImageFleetClient] = []
        self._client: ImageFleetClient | None = None

    # --- processes -----------------------------------------------------------------------------

    def start(self, workers: int) -> Fleet:
        self.start_orchestrator()
        self.start_workers(workers)
        return self

    def start_orchestrator(self) -> None:
        """Starts `imagefleet serve` and waits for /healthz; retries if the port got taken."""
        for attempt in range(3):
            port = free_port()
            process = ManagedProcess(
                "orchestrator",
                [
                    *(sys.executable, "-m", "imagefleet", "serve"),
                    *("--host", "127.0.0.1", "--port", str(port)),
                    *("--data-dir", str(self.data_dir)),
                ],
                child_env(**self.settings),
                self.root / f"orchestrator-{attempt}.log",
            )
            self.orchestrator = process
            self.url = f"http://127.0.0.1:{port}"
            if self._wait_healthy(process):
                return
            if "address already in use" not in process.log().lower():
                break
        raise RuntimeError(f"the orchestrator did not start:\n{self.orchestrator_log()}")

    def _wait_healthy(self, process: ManagedProcess) -> bool:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline and process.running:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        process.stop()
        return False

    def start_workers(self, number: int) -> list[ManagedProcess]:
        """Starts `number` workers at once (their imports overlap) and waits until each polls."""
        started = [self._spawn_worker() for _ in range(number)]
        for worker in started:
            worker.wait_for_log(WORKER_READY_LINE)
        return started

    def start_worker(self) -> ManagedProcess:
        return self.start_workers(1)[0]

    def _spawn_worker(self) -> ManagedProcess:
        number = next(_node_numbers)
        name = f"worker-{number}"
        worker = ManagedProcess(
            name,
            [
                *(sys.executable, "-m", "imagefleet", "worker"),
                *("--orchestrator", self.url, "--key", self.keys.worker),
                *("--cache-dir", str(self.root / f"cache-{number}")),
                *("--node-id", f"e2e-node-{number}", "--claim-wait", "2"),
            ],
            # One torch thread per worker: two workers and the orchestrator share two cores, and
            # torch's default of a thread per core oversubscribes them and makes step times swing.
            child_env(OMP_NUM_THREADS="1", **self.worker_env),
            self.root / f"{name}.log",
        )
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        """Stops workers first (all signalled at once), then the orchestrator, then clients."""
        for worker in self.workers:
            if worker.running:
                worker.send(signal.SIGTERM)
        for worker in self.workers:
            worker.stop()
        if self.orchestrator is not None:
            self.orchestrator.stop()
        for client in self._clients:
            client.close()

    # --- clients and inspection ----------------------------------------------------------------

    @property
    def client(self) -> ImageFleetClient:
        """A client with alice's key, the tenant most tests act as."""
        if self._client is None:
            self._client = self.client_for(self.keys.alice)
        return self._client

    def client_for(self, key: str) -> ImageFleetClient:
        client = ImageFleetClient(self.url, key)
        self._clients.append(client)
        return client

    def wait_until(
        self,
        job_id: str,
        condition: Callable[[JobView], bool],
        *,
        timeout: float = 45.0,
        poll_seconds: float = 0.1,
        seen: list[JobView] | None = None,
    ) -> JobView:
        """Polls the job until `condition` holds; every state seen is appended to `seen`."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.client.get(job_id)
            if seen is not None:
                seen.append(job)
            if condition(job):
                return job
            if job.status.is_final:
                raise AssertionError(f"job {job_id} ended {job.status.value} first: {job}")
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} never met the condition in {timeout}s: {job}")
            time.sleep(poll_seconds)

    def wait_final(self, job_id: str, timeout: float = 45.0) -> JobView:
        return self.client.wait(job_id, timeout=timeout, poll_seconds=0.1)

    def attempt_outcomes(self, job_id: str) -> list[str]:
        """The outcome of each attempt on the job, in order, as its owner sees them."""
        response = self.client.http.get(f"/v1/jobs/{job_id}/attempts")
        response.raise_for_status()
        views = [AttemptView.model_validate(item) for item in response.json()]
        return [view.outcome for view in sorted(views, key=lambda view: view.number)]

    def counted_failures(self, job_id: str) -> int:
        """Attempts that count against max_attempts, by the store's own definition."""
        with self._database() as db, db.read() as conn:
            return job_sql.count_failures(conn, job_id)

    def artifact_files(self, job_id: str) -> list[Path]:
        """Files in the local artifact store that belong to the job (its id is in their key)."""
        root = self.data_dir / "artifacts"
        return sorted(p for p in root.rglob("*") if p.is_file() and job_id in str(p))

    def _database(self) -> _DatabaseContext:
        return _DatabaseContext(f"sqlite:///{self.data_dir / DB_FILE}")

    def orchestrator_log(self) -> str:
        return self.orchestrator.log() if self.orchestrator else ""

    def log_sections(self) -> list[tuple[str, str]]:
        processes = [p for p in (self.orchestrator, *self.workers) if p is not None]
        return [(f"{p.name} log (tail)", p.log()[-LOG_TAIL_CHARS:]) for p in processes]


class _DatabaseContext:
    """A short-lived read connection to a fleet's SQLite file, disposed on exit."""

    def __init__(self, url: str) -> None:
        self.database = Database(url)

    def __enter__(self) -> Database:
        return self.database

    def __exit__(self, *_: object) -> None:
        self.database.dispose()


class FleetFactory:
    """Starts fleets on demand for one test (or session) and stops them all afterwards."""

    def __init__(self, root: Path, template: FleetTemplate) -> None:
        self.root = root
        self.template = template
        self.fleets: list[Fleet] = []

    def __call__(self, workers: int = 1, *, lease_seconds: float = 3.0, **settings: str) -> Fleet:
        fleet = Fleet(
            self.root / f"fleet-{len(self.fleets)}",
            self.template,
            lease_seconds=lease_seconds,
            **settings,
        )
        self.fleets.append(fleet)
        return fleet.start(workers)

    def close(self) -> None:
        for fleet in self.fleets:
            fleet.close()


@pytest.fixture(scope="session")
def fleet_template(tmp_path_factory: pytest.TempPathFactory) -> FleetTemplate:
    """The demo model and keys, made with the CLI exactly as an operator would."""
    data_dir = tmp_path_factory.mktemp("template") / "data"
    run_cli("models", "create-demo", "--data-dir", str(data_dir))
    keys = FleetKeys(
        alice=_create_key(data_dir, "alice", "client"),
        bob=_create_key(data_dir, "bob", "client"),
        worker=_create_key(data_dir, "workers", "worker"),
    )
    return FleetTemplate(data_dir, keys)


@pytest.fixture
def start_fleet(tmp_path: Path, fleet_template: FleetTemplate) -> Iterator[FleetFactory]:
    """For tests that kill, stop or starve workers: fleets of their own, gone afterwards."""
    factory = FleetFactory(tmp_path, fleet_template)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="session")
def shared_fleet(
    tmp_path_factory: pytest.TempPathFactory, fleet_template: FleetTemplate
) -> Iterator[Fleet]:
    """One orchestrator and two workers for tests that only submit and read jobs."""
    factory = FleetFactory(tmp_path_factory.mktemp("shared"), fleet_template)
    try:
        yield factory(workers=2)
    finally:
        factory.close()


def _fleets_of(value: Any) -> list[Fleet]:
    if isinstance(value, Fleet):
        return [value]
    if isinstance(value, FleetFactory):
        return value.fleets
    return []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attaches the process logs of a failed test's fleets to its report."""
    report = yield
    if report.when == "call" and report.failed:
        for value in getattr(item, "funcargs", {}).values():
            for fleet in _fleets_of(value):
                for title, text in fleet.log_sections():
                    report.sections.append((f"{title} [{fleet.root.name}]", text))
    return report
