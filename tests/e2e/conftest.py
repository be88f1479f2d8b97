"""End-to-end fixtures: a real orchestrator process and real worker processes on 127.0.0.1.

Nothing here runs imagefleet in the test process: every component is started the way a user
starts it (`python -m imagefleet ...`), talks real HTTP on a free port and can be killed with
real signals. Each process writes its output to a log file under the test's temporary folder;
when a test fails, the tails of those logs are attached to its report.

The demo model and the API keys are made once per session (building the model costs seconds);
every fleet then starts from a copy of that database, so fleets never see each other's jobs.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from imagefleet.api_views import AttemptView, JobView
from imagefleet.client import ImageFleetClient
from imagefleet.store import attempts as attempt_sql
from imagefleet.store.database import Database
from tests.harness import fleet as harness
from tests.harness.orchestrator import OrchestratorProcess
from tests.harness.processes import LOG_TAIL_CHARS, child_env

DB_FILE = "imagefleet.db"
# Node numbers run on across the session's fleets, so every worker log has its own name.
_node_numbers = count()


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


class Fleet(harness.Fleet):
    """An orchestrator process plus any number of worker processes, on a copy of the template's
    data folder, with clients and ways to look inside for the tests."""

    def __init__(
        self, root: Path, template: FleetTemplate, *, lease_seconds: float, **settings: str
    ) -> None:
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
        orchestrator = OrchestratorProcess(
            root, env=child_env(**self.settings), data_dir=self.data_dir
        )
        super().__init__(
            root, orchestrator, template.keys.worker, node_prefix="e2e-node", numbers=_node_numbers
        )
        self._clients: list[ImageFleetClient] = []
        self._client: ImageFleetClient | None = None

    def start(self, workers: int) -> Fleet:
        self.orchestrator.start()
        self.start_workers(workers)
        return self

    def start_worker(self) -> harness.WorkerProcess:
        return self.start_workers(1)[0]

    def close(self) -> None:
        """Stops workers first (all signalled at once), then the orchestrator, then clients."""
        self.stop()
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
            return attempt_sql.count_failures(conn, job_id)

    def artifact_files(self, job_id: str) -> list[Path]:
        """Files in the local artifact store that belong to the job (its id is in their key)."""
        root = self.data_dir / "artifacts"
        return sorted(p for p in root.rglob("*") if p.is_file() and job_id in str(p))

    def _database(self) -> _DatabaseContext:
        return _DatabaseContext(f"sqlite:///{self.data_dir / DB_FILE}")

    def log_sections(self) -> list[tuple[str, str]]:
        return [(f"{p.name} log (tail)", p.log_tail(LOG_TAIL_CHARS)) for p in self.processes()]


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
    harness.create_demo_model(data_dir)
    keys = FleetKeys(
        alice=harness.create_key(data_dir, "alice", "client"),
        bob=harness.create_key(data_dir, "bob", "client"),
        worker=harness.create_key(data_dir, "workers", "worker"),
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
