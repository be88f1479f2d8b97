"""The client side of a chaos run: the submitter (an Idempotency-Key per job, retried until
answered) and the job counts read from the database while the API keeps going down."""

from __future__ import annotations

import contextlib
import secrets
import threading
from typing import Any

import httpx
from sqlalchemy import func, select

from bench.chaos_lib.config import (
    ChaosConfig,
)
from imagefleet.store.database import Database
from imagefleet.store.tables import jobs


class Submitter(threading.Thread):
    """Submits the jobs one after another, each under its own Idempotency-Key, retrying every
    submit until it is answered 201 or 200 (or refused for good, which is a violation)."""

    def __init__(self, url: str, key: str, config: ChaosConfig) -> None:
        super().__init__(name="submitter", daemon=True)
        self.url = url
        self.key = key
        self.config = config
        self.tag = f"chaos-{secrets.token_hex(4)}"
        self.job_ids: list[str | None] = [None] * config.jobs
        self.acknowledged = 0
        self.created = 0
        self.replayed = 0
        self.retries = 0
        self.refused: list[str] = []
        self.halt = threading.Event()

    def body(self, index: int) -> dict[str, Any]:
        return {
            "kind": "txt2img",
            "params": {
                "prompt": f"chaos job {index}",
                "model": "demo",
                "width": self.config.size,
                "height": self.config.size,
                "steps": self.config.steps,
                "seed": index,
            },
        }

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=10.0) as http:
            for index in range(self.config.jobs):
                if self.halt.is_set():
                    return
                self._submit(http, index)

    def _submit(self, http: httpx.Client, index: int) -> None:
        headers = {"Idempotency-Key": f"{self.tag}-{index}"}
        delay = 0.1
        while not self.halt.is_set():
            wait = delay
            try:
                response = http.post("/v1/jobs", json=self.body(index), headers=headers)
            except httpx.TransportError:
                pass
            else:
                if response.status_code in (200, 201):
                    self.job_ids[index] = response.json()["id"]
                    self.acknowledged += 1
                    if response.status_code == 201:
                        self.created += 1
                    else:
                        self.replayed += 1
                    return
                if response.status_code != 429 and response.status_code < 500:
                    self.refused.append(
                        f"submit {index} refused: HTTP {response.status_code} {response.text[:300]}"
                    )
                    return
                with contextlib.suppress(ValueError):
                    wait = max(wait, float(response.headers.get("Retry-After", 0)))
            self.retries += 1
            self.halt.wait(wait)
            delay = min(delay * 2, 2.0)


class StatusCounts:
    """Jobs per status, read from the database (not the API, which the chaos keeps taking
    down). A failed read keeps the last answer: the database may be the thing that is down."""

    def __init__(self, url: str) -> None:
        self.db = Database(url)
        self.last: dict[str, int] = {}

    def read(self) -> dict[str, int]:
        try:
            with self.db.read() as conn:
                rows = conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status))
                self.last = {status: int(count) for status, count in rows}
        except Exception:  # an outage on PostgreSQL; try again next tick
            pass
        return self.last

    def close(self) -> None:
        self.db.dispose()
