"""Simulated clients and GPU-less workers speaking the real HTTP API, shared by the
no-double-claim test and bench/control_plane.py."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

TINY_PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00"
    b"\x00\x00IEND\xaeB`\x82"
)
TINY_PNG_BASE64 = base64.b64encode(TINY_PNG).decode()
PARAMS = {"prompt": "load", "model": "demo", "width": 64, "height": 64, "steps": 1}


@dataclass
class Claimed:
    job_id: str
    attempt_id: str
    worker: str
    claim_seconds: float  # the claim's round trip; for a following claim, the completion's
    following: bool = False  # handed out with the worker's previous completion (its `next`)


@dataclass
class LoadLog:
    """What every simulated worker saw, appended under a lock."""

    claims: list[Claimed] = field(default_factory=list)
    completed: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def submit_jobs(urls: list[str], client_key: str, count: int, threads: int = 4) -> list[str]:
    """Submits `count` txt2img jobs round-robin over the replicas; returns their ids. Raises
    if any submit failed (the orchestrators must run with rate limiting off)."""
    ids: list[str] = []
    lock = threading.Lock()

    def run(offset: int) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {client_key}"}, timeout=30) as http:
            for n in range(offset, count, threads):
                response = http.post(
                    f"{urls[n % len(urls)]}/v1/jobs", json={"kind": "txt2img", "params": PARAMS}
                )
                response.raise_for_status()
                with lock:
                    ids.append(response.json()["id"])

    errors: list[BaseException] = []

    def guarded(offset: int) -> None:
        try:
            run(offset)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=guarded, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} submitter threads failed; first: {errors[0]}")
    return ids


def simulated_worker(
    name: str,
    urls: list[str],
    worker_key: str,
    log: LoadLog,
    done: Callable[[], bool],
    *,
    wait_seconds: float = 1.0,
    heartbeat: bool = True,
    deadline_seconds: float = 600.0,
    inline: bool = False,
    follow: bool = False,
) -> None:
    """Claim, heartbeat once, upload a tiny PNG, complete (with `inline`, upload-and-complete
    in one call, as the real worker does for small outputs; with `follow`, the completion
    carries the next claim, as the real worker sends it, and a job it hands out is worked
    without a claim call); alternate replicas; stop when done() or after `deadline_seconds`,
    so that a broken run ends instead of hanging."""
    headers = {"Authorization": f"Bearer {worker_key}"}
    turn = 0
    deadline = time.monotonic() + deadline_seconds
    body = {"worker_id": name, "node_id": name, "wait_seconds": wait_seconds}
    following: dict[str, str] | None = None  # a job the last completion handed out
    with httpx.Client(headers=headers, timeout=60) as http:
        while not done() and time.monotonic() < deadline:
            base = urls[turn % len(urls)]
            turn += 1
            started = time.perf_counter()
            try:
                assignment, following = following, None
                if assignment is None:
                    response = http.post(f"{base}/v1/worker/claim", json=body)
                    response.raise_for_status()
                    assignment = response.json()["assignment"]
                    if assignment is None:
                        continue
                    claim_seconds = time.perf_counter() - started
                attempt = assignment["attempt_id"]
                prefix = f"{urls[turn % len(urls)]}/v1/worker/attempts/{attempt}"
                with log.lock:
                    log.claims.append(
                        Claimed(
                            assignment["job_id"],
                            attempt,
                            name,
                            claim_seconds,
                            following=assignment.get("following", False),
                        )
                    )
                if heartbeat:
                    http.post(
                        f"{prefix}/heartbeat", json={"step": 1, "total_steps": 1}
                    ).raise_for_status()
                output: dict[str, object] = {"index": 0, "seed": 0, "width": 64, "height": 64}
                completion: dict[str, object] = {"outputs": [output]}
                if follow and not done():
                    completion["next"] = body
                completed_at = time.perf_counter()
                if inline:
                    output["data_base64"] = TINY_PNG_BASE64
                    outcome = http.post(f"{prefix}/complete-inline", json=completion)
                else:
                    http.put(
                        f"{prefix}/outputs/0",
                        content=TINY_PNG,
                        headers={"Content-Type": "image/png"},
                    ).raise_for_status()
                    completed_at = time.perf_counter()
                    outcome = http.post(f"{prefix}/complete", json=completion)
                outcome.raise_for_status()
                with log.lock:
                    log.completed += 1
                handed = (outcome.json().get("next") or {}).get("assignment")
                if handed is not None:
                    following = {**handed, "following": True}
                    claim_seconds = time.perf_counter() - completed_at
            except httpx.HTTPError as exc:
                with log.lock:
                    log.errors.append(f"{name}: {exc}")
