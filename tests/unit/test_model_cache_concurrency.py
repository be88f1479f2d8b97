"""However many jobs, threads or worker processes want a model at once, it is downloaded once,
and a model one process uses is never evicted by another."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagefleet.hashing import path_sha256
from imagefleet.worker.model_cache import ModelCache
from imagefleet.worker.model_settings import ModelSettings
from tests.model_server import ModelServer, serving

ROOT = Path(__file__).resolve().parents[2]
# A worker process: says it is about to ask, asks, prints the path it got.
ENSURE = """
import sys
from pathlib import Path
from imagefleet.worker.model_cache import ModelCache
from imagefleet.worker.model_settings import ModelSettings
root, url, sha, size = sys.argv[1:5]
cache = ModelCache(Path(root), settings=ModelSettings(allow_private_urls=True))
print("asking", flush=True)
path, _ = cache.ensure(url, sha, int(size))
print(path, flush=True)
"""
# A worker process that holds a model in use until its stdin closes.
HOLD = """
import sys
from pathlib import Path
from imagefleet.worker.model_cache import ModelCache
root, source, sha, size = sys.argv[1:5]
cache = ModelCache(Path(root))
with cache.lease(source, sha, int(size)):
    print("leased", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ModelServer]:
    folder = tmp_path / "served"
    folder.mkdir()
    with serving(folder) as running:
        yield running


def model(server: ModelServer, size: int = 200_000) -> tuple[str, str, int]:
    path = server.folder / "m.safetensors"
    path.write_bytes(b"m" * size)
    digest, total = path_sha256(path)
    return f"{server.url}/m.safetensors", digest, total


def python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_threads_wanting_one_model_download_it_once(
    tmp_path: Path, server: ModelServer
) -> None:
    url, digest, size = model(server)
    server.hold = threading.Event()  # the first download waits until both threads have asked
    cache = ModelCache(tmp_path / "cache", settings=ModelSettings(allow_private_urls=True))
    asked = threading.Barrier(3)
    results: list[Path] = []

    def job() -> None:
        asked.wait()
        results.append(cache.ensure(url, digest, size)[0])

    threads = [threading.Thread(target=job) for _ in range(2)]
    for thread in threads:
        thread.start()
    asked.wait()
    assert server.first_request.wait(timeout=30)
    server.hold.set()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 2 and results[0] == results[1]
    assert server.gets("/m.safetensors") == 1


def test_two_worker_processes_sharing_a_cache_download_a_model_once(
    tmp_path: Path, server: ModelServer
) -> None:
    url, digest, size = model(server)
    server.hold = threading.Event()
    root = str(tmp_path / "cache")
    workers = [python(ENSURE, root, url, digest, str(size)) for _ in range(2)]
    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "asking"
        assert server.first_request.wait(timeout=60)
        server.hold.set()
        outputs = [worker.communicate(timeout=120) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    paths = {out.strip() for out, _ in outputs}
    assert all(w.returncode == 0 for w in workers), [err for _, err in outputs]
    assert paths == {str(tmp_path.resolve() / "cache" / digest / "m.safetensors")}
    assert server.gets("/m.safetensors") == 1


def test_a_model_another_process_uses_is_not_evicted(tmp_path: Path) -> None:
    files = []
    for name in "abc":
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(name.encode() * 10_000)
        files.append((str(path), *path_sha256(path)))
    (a, a_sha, a_size), b, c = files
    root = tmp_path / "cache"
    ModelCache(root).ensure(a, a_sha, a_size)
    holder = python(HOLD, str(root), a, a_sha, str(a_size))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "leased"
        cache = ModelCache(root, budget_bytes=25_000)
        cache.ensure(*b)
        cache.ensure(*c)  # a is the least recently used, but the other process holds it
        assert cache.cached() == sorted([a_sha, c[1]])
    finally:
        holder.communicate(input="", timeout=60)
    assert holder.returncode == 0
    assert cache.evict(a_sha)  # released with the process
