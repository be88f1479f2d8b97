"""What FastAPI's request stack costs a hot call, against the lean path that answers it
(imagefleet/orchestrator/hot_routes.py): CPU per request for the same calls through an app
with the lean path and one without, in the same process and run. Also what the lean path's
hand-off to a request thread costs: `imagefleet.blocking.run_blocking` (the default) against
Starlette's `run_in_threadpool` (anyio's worker threads, the baseline), swapped in turn on the
same app, with one call and with 16 calls in flight.

The lifecycle behind each call is replaced by a constant answer, so that what is left is the
framework's work alone: reading the request, authenticating (a key cache hit), validating the
body, the thread hand-off of a plain `def` route, writing the answer. The calls go straight to
the ASGI app (no socket, no uvicorn), which both paths share in production. Process CPU time
(all threads) per request, alternating the two apps over several rounds; the baseline is
FastAPI's routing measured in the same run.

    .venv/bin/python bench/hot_routes.py
    .venv/bin/python bench/hot_routes.py --requests 5000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fastapi import FastAPI  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402

from bench.common.report import say, table  # noqa: E402
from imagefleet.blocking import run_blocking  # noqa: E402
from imagefleet.config import Settings  # noqa: E402
from imagefleet.orchestrator import hot_routes  # noqa: E402
from imagefleet.orchestrator.app import create_app  # noqa: E402
from imagefleet.store.keys import ApiKey  # noqa: E402
from imagefleet.worker_protocol import AttemptResult, HeartbeatResponse  # noqa: E402

TOKEN = "if_bench_secret"
CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "heartbeat": ("/v1/worker/attempts/a1/heartbeat", {"step": 1, "total_steps": 2}),
    "complete": (
        "/v1/worker/attempts/a1/complete",
        {"outputs": [{"index": 0, "seed": 1, "width": 64, "height": 64}]},
    ),
}


def make_app(scratch: Path, hot: bool) -> FastAPI:
    settings = Settings(
        data_dir=scratch / ("hot" if hot else "plain"),
        database_url=f"sqlite:///{scratch}/{'hot' if hot else 'plain'}.db",
        key_cache_seconds=3600,
        hot_routes=hot,
    )
    app = create_app(settings, run_duties=False)
    beat = HeartbeatResponse(action="continue")
    done = AttemptResult(job_id="j1", job_status="succeeded")  # type: ignore[arg-type]
    app.state.lifecycle.heartbeat = lambda key, attempt, body: beat
    app.state.lifecycle.complete = lambda key, attempt, body, signal=None: done
    app.state.key_cache.put(TOKEN, ApiKey("k", "bench", "worker", "free", 0.0, None))
    return app


async def call(app: FastAPI, path: str, body: bytes) -> int:
    """One request through the ASGI app; its status."""
    headers = [
        (b"host", b"bench"),
        (b"authorization", f"Bearer {TOKEN}".encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "root_path": "",
        "state": {},
    }
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def cpu_per_request(
    app: FastAPI, path: str, body: bytes, requests: int, in_flight: int = 1
) -> float:
    """µs of process CPU per request, after a warm-up, with `in_flight` callers at once."""
    for _ in range(100):
        assert await call(app, path, body) == 200

    async def caller() -> None:
        for _ in range(requests // in_flight):
            await call(app, path, body)

    started = time.process_time()
    await asyncio.gather(*(caller() for _ in range(in_flight)))
    return (time.process_time() - started) / (requests // in_flight * in_flight) * 1e6


HAND_OFFS = {"anyio": run_in_threadpool, "run_blocking": run_blocking}


async def hand_off_cost(
    app: FastAPI, path: str, body: bytes, requests: int, rounds: int
) -> dict[str, float]:
    """The lean path's CPU per request with each hand-off, alternated on the same app; keys
    `<hand-off>_<in flight>`."""
    samples: dict[str, list[float]] = {}
    try:
        for _ in range(rounds):
            for name, hand_off in HAND_OFFS.items():
                hot_routes.run_blocking = hand_off  # type: ignore[assignment]
                for in_flight in (1, 16):
                    cost = await cpu_per_request(app, path, body, requests, in_flight)
                    samples.setdefault(f"{name}_{in_flight}", []).append(cost)
    finally:
        hot_routes.run_blocking = run_blocking
    return {key: statistics.median(values) for key, values in samples.items()}


async def measure(requests: int, rounds: int) -> dict[str, dict[str, float]]:
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        apps = {hot: make_app(Path(scratch), hot) for hot in (False, True)}
        for name, (path, payload) in CALLS.items():
            body = json.dumps(payload).encode()
            samples: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(rounds):
                for hot in (False, True):
                    samples[hot].append(await cpu_per_request(apps[hot], path, body, requests))
            figures[name] = {
                "fastapi_us": statistics.median(samples[False]),
                "lean_us": statistics.median(samples[True]),
                **await hand_off_cost(apps[True], path, body, requests, rounds),
            }
            say(f"{name}: {figures[name]}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="Requests per sample.")
    parser.add_argument("--rounds", type=int, default=3, help="Samples of each path (median).")
    parser.add_argument("--json", help="Also write the figures here.")
    args = parser.parse_args()
    figures = asyncio.run(measure(args.requests, args.rounds))
    rows = [
        [
            name,
            f"{f['fastapi_us']:,.0f}",
            f"{f['lean_us']:,.0f}",
            f"{f['fastapi_us'] / f['lean_us']:.1f}x",
        ]
        for name, f in figures.items()
    ]
    print(table(["call", "FastAPI routing µs CPU", "lean path µs CPU", "ratio"], rows))
    hand_offs = [
        [
            name,
            str(in_flight),
            f"{f[f'anyio_{in_flight}']:,.0f}",
            f"{f[f'run_blocking_{in_flight}']:,.0f}",
            f"{f[f'anyio_{in_flight}'] / f[f'run_blocking_{in_flight}']:.2f}x",
        ]
        for name, f in figures.items()
        for in_flight in (1, 16)
    ]
    print()
    headers = ["call", "in flight", "anyio hand-off µs CPU", "run_blocking µs CPU", "ratio"]
    print(table(headers, hand_offs))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
