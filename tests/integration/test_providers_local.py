"""The local provider starts, drains and stops real child processes.

The pool's command is configurable, so these tests run a small stand-in worker (a real Python
child) that records the environment it was given and what signals it got: starting a real
`imagefleet worker` costs a torch import per process on this machine and needs an
orchestrator. The full 0 -> max -> min run with real workers needs the orchestrator's control
loop and comes with its integration.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imagefleet.scaling.pools import LocalSettings
from imagefleet.scaling.providers.base import InstanceState, ProviderNotFound, ProviderRejected
from imagefleet.scaling.providers.local import KILL_MARGIN_SECONDS, LocalProvider

STAND_IN = r"""
import os, signal, sys, pathlib
out = pathlib.Path(sys.argv[1]) / os.environ["IMAGEFLEET_NODE_ID"]
def on_term(signum, frame):
    with out.open("a") as f:
        f.write("SIGTERM\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if sys.argv[2] == "stubborn" else on_term)
out.write_text(" ".join([os.environ["IMAGEFLEET_POOL"],
                         os.environ["IMAGEFLEET_WORKER_SHUTDOWN_GRACE"],
                         os.environ.get("EXTRA", "-")]) + "\n")
while True:
    signal.pause()
"""
WAIT = 20.0
Make = Callable[..., LocalProvider]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Polls a condition on real child processes (no fixed sleep: returns as soon as it holds)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Make]:
    made: list[LocalProvider] = []

    def build(mode: str = "polite", clock: FakeClock | None = None) -> LocalProvider:
        settings = LocalSettings(
            type="local",
            command=[sys.executable, "-c", STAND_IN],
            args=[str(tmp_path), mode],
            env={"EXTRA": "from-settings"},
            drain_grace_seconds=30,
        )
        provider = LocalProvider("cpu", settings, clock=clock or time.monotonic)
        made.append(provider)
        return provider

    yield build
    for provider in made:
        for instance in provider.list_instances():
            provider._kill(provider._children[instance.id])


def started(tmp_path: Path, provider: LocalProvider) -> None:
    wait_for(
        lambda: all(_wrote_its_line(tmp_path / i.id) for i in provider.list_instances()),
        "the stand-ins to start",
    )


def _wrote_its_line(path: Path) -> bool:
    """The stand-in creates its file and then writes it: existence alone can be read empty."""
    return path.exists() and path.read_text().endswith("\n")


def test_scale_to_starts_workers_with_their_pool_node_id_and_grace(
    make: Make, tmp_path: Path
) -> None:
    provider = make()
    provider.scale_to(2)
    instances = provider.list_instances()
    assert len(instances) == 2
    assert all(i.state is InstanceState.running for i in instances)
    assert all(i.node_id == i.id and i.id.startswith("cpu-") for i in instances)
    started(tmp_path, provider)
    for instance in instances:
        assert (tmp_path / instance.id).read_text() == "cpu 30.0 from-settings\n"


def test_drain_sends_sigterm_and_the_worker_leaves_when_it_has_finished(
    make: Make, tmp_path: Path
) -> None:
    provider = make()
    provider.scale_to(1)
    started(tmp_path, provider)
    (instance,) = provider.list_instances()
    provider.drain(instance.id)
    wait_for(lambda: not provider.list_instances(), "the drained worker to exit")
    assert (tmp_path / instance.id).read_text().endswith("SIGTERM\n")


def test_a_drained_worker_shows_as_draining_and_no_longer_counts_toward_the_replicas(
    make: Make, tmp_path: Path
) -> None:
    provider = make("stubborn")
    provider.scale_to(2)
    started(tmp_path, provider)
    first = provider.list_instances()[0]
    provider.drain(first.id)
    states = {i.id: i.state for i in provider.list_instances()}
    assert states[first.id] is InstanceState.draining
    provider.scale_to(2)
    assert sum(1 for i in provider.list_instances() if i.state is InstanceState.running) == 2


def test_scale_down_without_victims_drains_the_newest(make: Make, tmp_path: Path) -> None:
    provider = make()
    provider.scale_to(3)
    started(tmp_path, provider)
    oldest = min(provider.list_instances(), key=lambda i: i.started_at or 0)
    provider.scale_to(1)
    wait_for(lambda: len(provider.list_instances()) == 1, "two workers to leave")
    assert [i.id for i in provider.list_instances()] == [oldest.id]


def test_a_worker_that_ignores_sigterm_is_killed_after_its_grace(
    make: Make, tmp_path: Path
) -> None:
    clock = FakeClock()
    provider = make("stubborn", clock)
    provider.scale_to(1)
    started(tmp_path, provider)
    (instance,) = provider.list_instances()
    provider.drain(instance.id)
    clock.now += 30 + KILL_MARGIN_SECONDS - 1
    assert [i.state for i in provider.list_instances()] == [InstanceState.draining]
    clock.now += 2
    assert provider.list_instances() == []


def test_replace_drains_the_bad_one_and_starts_a_fresh_one(make: Make, tmp_path: Path) -> None:
    provider = make()
    provider.scale_to(1)
    started(tmp_path, provider)
    (bad,) = provider.list_instances()
    provider.replace(bad.id)
    wait_for(
        lambda: [i.id != bad.id for i in provider.list_instances()] == [True],
        "the replacement to be the only one",
    )


def test_a_worker_that_exits_by_itself_is_forgotten_and_scale_to_restores_the_count(
    make: Make, tmp_path: Path
) -> None:
    provider = make()
    provider.scale_to(1)
    started(tmp_path, provider)
    (instance,) = provider.list_instances()
    provider._children[instance.id].process.kill()
    wait_for(lambda: not provider.list_instances(), "the dead worker to be reaped")
    provider.scale_to(1)
    assert len(provider.list_instances()) == 1


def test_close_drains_everything_and_waits(make: Make, tmp_path: Path) -> None:
    provider = make()
    provider.scale_to(2)
    started(tmp_path, provider)
    ids = [i.id for i in provider.list_instances()]
    provider.close()
    assert provider.list_instances() == []
    assert all((tmp_path / i).read_text().endswith("SIGTERM\n") for i in ids)


def test_unknown_instances_and_unstartable_commands_are_typed_errors(make: Make) -> None:
    provider = make()
    with pytest.raises(ProviderNotFound):
        provider.drain("cpu-nope-1")
    broken = LocalProvider(
        "cpu", LocalSettings(type="local", command=["/nonexistent/imagefleet-worker"])
    )
    with pytest.raises(ProviderRejected) as caught:
        broken.scale_to(1)
    assert "cannot start '/nonexistent/imagefleet-worker'" in str(caught.value)


def test_the_default_command_is_this_pythons_imagefleet_worker() -> None:
    settings = LocalSettings(type="local", args=["--url", "http://127.0.0.1:8000"])
    assert LocalProvider("cpu", settings).command == [
        sys.executable, "-m", "imagefleet", "worker", "--url", "http://127.0.0.1:8000",
    ]  # fmt: skip
