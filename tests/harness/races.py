"""Timing attacks on the worker protocol, and the audit of what they were told.

Simulated workers (raw HTTP, no engine) claim jobs and then act right at lease expiry: they
complete, fail or heartbeat just before or just after the lease runs out, complete twice at
once, or complete and fail the same attempt at once. Every answer is recorded; the audit then
checks each 2xx against the database: no answer may be contradicted by what was stored.

Used by tests/integration/test_exactly_once.py and by bench/chaos.py (`--attackers`).
"""

from __future__ import annotations

import contextlib
import io
import random
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import psycopg
from PIL import Image

ATTACKS = (
    "plain",
    "late_complete",
    "late_complete",
    "late_fail",
    "late_heartbeat",
    "twice",
    "both",
)


@dataclass
class Answer:
    """One worker-protocol call and what the server said."""

    action: str
    job_id: str
    attempt_id: str
    status: int
    body: Any
    sent_at: float


@dataclass
class AnswerLog:
    answers: list[Answer] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, answer: Answer) -> None:
        with self.lock:
            self.answers.append(answer)

    def count(self, action: str) -> int:
        return sum(1 for answer in self.answers if answer.action == action)


def png_of(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 40, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


def pg_deadlocks(url: str) -> int:
    """PostgreSQL's count of deadlocks detected in this database since its statistics reset."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


class Attacker:
    """One simulated worker that claims jobs and attacks each attempt in a seeded way."""

    def __init__(
        self,
        index: int,
        urls: Sequence[str],
        worker_key: str,
        log: AnswerLog,
        stop: threading.Event,
        *,
        seed: int,
        jitter: float = 0.3,
    ) -> None:
        self.index = index
        self.urls = list(urls)
        self.key = worker_key
        self.log = log
        self.stop = stop
        self.rng = random.Random(seed + index)
        self.jitter = jitter
        self._pngs: dict[tuple[int, int], bytes] = {}

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        body = {
            "worker_id": f"attacker-{self.index}",
            "node_id": f"attacker-node-{self.index}",
            "wait_seconds": 0.5,
        }
        with httpx.Client(headers=headers, timeout=30) as http:
            turn = self.index
            while not self.stop.is_set():
                turn += 1
                base = self.urls[turn % len(self.urls)]
                other = self.urls[(turn + 1) % len(self.urls)]
                try:
                    claim = http.post(f"{base}/v1/worker/claim", json=body)
                except httpx.TransportError:
                    time.sleep(0.5)  # an orchestrator restart in a chaos run
                    continue
                if claim.status_code != 200:
                    self.log.add(
                        Answer("claim", "", "", claim.status_code, claim.text, time.time())
                    )
                    time.sleep(0.2)
                    continue
                assignment = claim.json()["assignment"]
                if assignment is not None:
                    # On a transport error the lease expires; the reaper hands the job on.
                    with contextlib.suppress(httpx.TransportError):
                        self.attack(http, base, other, assignment)

    def _call(
        self, http: httpx.Client, action: str, assignment: dict[str, Any], url: str, **kw: Any
    ) -> httpx.Response:
        sent = time.time()
        response = http.request(kw.pop("method", "POST"), url, **kw)
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        self.log.add(
            Answer(
                action,
                assignment["job_id"],
                assignment["attempt_id"],
                response.status_code,
                body,
                sent,
            )
        )
        return response

    def attack(self, http: httpx.Client, base: str, other: str, assignment: dict[str, Any]) -> None:
        params = assignment["params"]
        size = (int(params.get("width") or 64), int(params.get("height") or 64))
        png = self._pngs.setdefault(size, png_of(*size))
        count = int(params.get("num_images") or 1)
        prefix = f"/v1/worker/attempts/{assignment['attempt_id']}"
        for index in range(count):
            self._call(
                http,
                "upload",
                assignment,
                f"{base}{prefix}/outputs/{index}",
                method="PUT",
                content=png,
                headers={"Content-Type": "image/png"},
            )
        complete = {
            "outputs": [
                {"index": i, "seed": i, "width": size[0], "height": size[1]} for i in range(count)
            ]
        }
        expiry = datetime.fromisoformat(assignment["lease_expires_at"]).timestamp()
        attack = self.rng.choice(ATTACKS)

        def at_expiry() -> None:
            time.sleep(max(0.0, expiry + self.rng.uniform(-self.jitter, self.jitter) - time.time()))

        def complete_at(url: str) -> httpx.Response:
            return self._call(
                http, "complete", assignment, f"{url}{prefix}/complete", json=complete
            )

        if attack == "plain":
            complete_at(base)
        elif attack == "late_complete":
            at_expiry()
            complete_at(other)
        elif attack == "late_fail":
            at_expiry()
            self._call(
                http,
                "fail",
                assignment,
                f"{other}{prefix}/fail",
                json={"code": "worker_error", "message": "late"},
            )
        elif attack == "late_heartbeat":
            at_expiry()
            beat = self._call(
                http,
                "heartbeat",
                assignment,
                f"{other}{prefix}/heartbeat",
                json={"step": 1, "total_steps": 1},
            )
            if beat.status_code == 200 and beat.json()["action"] == "continue":
                # Granted a fresh lease: finish inside it, on the other replica.
                time.sleep(self.rng.uniform(0.0, 0.5))
                complete_at(base)
        else:
            second: tuple[str, str, dict[str, Any]] = (
                ("complete", f"{other}{prefix}/complete", complete)
                if attack == "twice"
                else ("fail", f"{other}{prefix}/fail", {"code": "worker_error", "message": "both"})
            )
            at_expiry()
            with httpx.Client(headers=http.headers, timeout=30) as parallel:
                thread = threading.Thread(
                    target=self._call,
                    args=(parallel, second[0], assignment, second[1]),
                    kwargs={"json": second[2]},
                )
                thread.start()
                complete_at(base)
                thread.join()


def start_attackers(
    count: int, urls: Sequence[str], worker_key: str, log: AnswerLog, *, seed: int
) -> tuple[threading.Event, list[threading.Thread]]:
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=Attacker(i, urls, worker_key, log, stop, seed=seed).run, daemon=True
        )
        for i in range(count)
    ]
    for thread in threads:
        thread.start()
    return stop, threads


def contradictions(
    answers: Sequence[Answer],
    jobs_by_id: dict[str, Any],
    attempts_by_id: dict[str, Any],
    accepted: Sequence[tuple[str, str, int]],
) -> list[str]:
    """Every 2xx answer the database contradicts, every 5xx, and every job whose accepted
    files came from more than its result attempt. `jobs_by_id`/`attempts_by_id` hold rows with
    the tables' columns; `accepted` is (job_id, attempt_id, idx) of accepted artifacts."""
    problems = [
        f"{a.action} of {a.attempt_id} answered {a.status}: {str(a.body)[:200]}"
        for a in answers
        if a.status >= 500
    ]
    files: dict[str, set[str]] = defaultdict(set)
    for job_id, attempt_id, _ in accepted:
        files[job_id].add(attempt_id)
    for job_id, attempt_ids in files.items():
        row = jobs_by_id[job_id]
        if row.status != "succeeded" or attempt_ids != {row.result_attempt_id}:
            problems.append(f"job {job_id} ({row.status}) accepted files of {sorted(attempt_ids)}")
    for answer in answers:
        if answer.status != 200 or answer.action in ("claim", "upload"):
            continue
        row = jobs_by_id.get(answer.job_id)
        attempt = attempts_by_id.get(answer.attempt_id)
        if row is None or attempt is None:
            problems.append(f"{answer.action} of {answer.attempt_id}: no such job or attempt")
            continue
        if answer.action == "complete" and not (
            row.status == "succeeded" and row.result_attempt_id == answer.attempt_id
        ):
            problems.append(
                f"complete of {answer.attempt_id} answered 200 but job {row.id} is "
                f"{row.status} with result {row.result_attempt_id}"
            )
        elif answer.action == "fail" and attempt.outcome != "failed":
            problems.append(f"fail of {answer.attempt_id} answered 200; outcome {attempt.outcome}")
        elif answer.action == "heartbeat" and answer.body.get("action") == "continue":
            granted = datetime.fromisoformat(answer.body["lease_expires_at"]).timestamp()
            if attempt.outcome == "lease_expired" and attempt.ended_at < granted - 0.05:
                problems.append(
                    f"heartbeat of {answer.attempt_id} was granted a lease to {granted:.2f}, "
                    f"but the reaper took it at {attempt.ended_at:.2f}"
                )
    return problems
