"""Webhook delivery: a background duty on every replica that sends due deliveries from the
outbox, signed, with exponential backoff for up to `webhook_max_age_seconds`.

Sending happens outside any database transaction and concurrently, with a timeout, so a slow
or dead endpoint delays only its own deliveries, never the API or other endpoints.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import httpx
from sqlalchemy import Connection

from imagefleet import netguard, webhook_signing
from imagefleet.api_views import WebhookDeliveryView
from imagefleet.blocking import run_blocking
from imagefleet.config import Settings
from imagefleet.store import webhooks as webhook_sql
from imagefleet.store.database import Database
from imagefleet.store.jobs import JobRow

log = logging.getLogger("imagefleet.webhooks")
EVENTS = ("running", "succeeded", "failed", "cancelled", "checkpoint")
BATCH = 50
FIRST_RETRY_SECONDS = 5.0
MAX_RETRY_SECONDS = 3600.0
PRIVATE_HINT = "set IMAGEFLEET_WEBHOOK_ALLOW_PRIVATE=true to allow it"


def retry_delay(failed_attempts: int) -> float:
    """Seconds before the next try: 5 s doubling to at most an hour, with ±20% jitter so
    deliveries that failed together do not all retry together."""
    base = min(FIRST_RETRY_SECONDS * 2 ** max(0, failed_attempts - 1), MAX_RETRY_SECONDS)
    return base * random.uniform(0.8, 1.2)


def emit(
    conn: Connection, job: JobRow, event: str, now: float, extra: dict[str, Any] | None = None
) -> None:
    """Writes a delivery for `event` if the job asked for it, in the caller's transaction (the
    outbox): the event exists if and only if the state change committed. `extra` adds
    event-specific fields (a checkpoint's step)."""
    if not job.webhook_url or event not in (job.webhook_events or "").split(","):
        return
    payload: dict[str, Any] = {
        "event": event,
        "created_at": datetime.fromtimestamp(now, UTC).isoformat(),
        "job": {
            "id": job.id,
            "kind": job.kind,
            "status": job.status.value,
            "attempts": job.attempts,
            "error": {"code": job.error_code, "message": job.error_message or ""}
            if job.error_code and job.status.is_final
            else None,
        },
        **(extra or {}),
    }
    webhook_sql.enqueue(
        conn,
        job_id=job.id,
        owner_key_id=job.owner_key_id,
        event=event,
        url=job.webhook_url,
        payload=payload,
        now=now,
    )


class WebhookDispatcher:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    async def run_forever(self) -> None:
        async with httpx.AsyncClient(
            timeout=self.settings.webhook_timeout_seconds, follow_redirects=False
        ) as http:
            while True:
                try:
                    sent = await self.deliver_due(http)
                except Exception:
                    log.exception("webhook dispatch failed; retrying")
                    sent = 0
                if sent < BATCH:
                    await asyncio.sleep(self.settings.webhook_poll_seconds)

    async def deliver_due(self, http: httpx.AsyncClient) -> int:
        """Sends one batch of due deliveries concurrently; returns how many were tried."""
        lease = self.settings.webhook_timeout_seconds * 3

        def take() -> list[webhook_sql.Delivery]:
            with self.db.write() as conn:
                return webhook_sql.take_due(conn, time.time(), lease, BATCH)

        batch = await run_blocking(take)
        await asyncio.gather(*(self._send(http, delivery) for delivery in batch))
        return len(batch)

    async def _send(self, http: httpx.AsyncClient, delivery: webhook_sql.Delivery) -> None:
        status: int | None = None
        error: str | None = None
        try:
            host = urlparse(delivery.url).hostname or ""
            if not self.settings.webhook_allow_private:
                await run_blocking(netguard.check_public_host, host, PRIVATE_HINT)
            body = delivery.payload.encode()
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "imagefleet-webhooks",
                "Imagefleet-Event": delivery.event,
                "Imagefleet-Delivery": str(delivery.id),
                # Standard Webhooks headers (webhook-id is the delivery id, the same on every
                # retry, for deduplication) and, for one release, the older signature header.
                **webhook_signing.delivery_headers(
                    delivery.secret or "", str(delivery.id), body, int(time.time())
                ),
            }
            response = await http.post(delivery.url, content=body, headers=headers)
            status = response.status_code
            if not response.is_success:
                error = f"HTTP {status}"
        except (httpx.HTTPError, netguard.PrivateAddressError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:1000]
        await run_blocking(self._record, delivery, status, error)

    def _record(
        self, delivery: webhook_sql.Delivery, status: int | None, error: str | None
    ) -> None:
        now = time.time()
        retry_at: float | None = None
        if error is not None:
            retry_at = now + retry_delay(delivery.attempts + 1)
            if retry_at > delivery.created_at + self.settings.webhook_max_age_seconds:
                retry_at = None
                log.warning("giving up on webhook %s to %s: %s", delivery.id, delivery.url, error)
        with self.db.write() as conn:
            webhook_sql.record_attempt(
                conn, delivery.id, now=now, status=status, error=error, retry_at=retry_at
            )


def describe(delivery: webhook_sql.Delivery) -> WebhookDeliveryView:
    """The delivery log entry as the API shows it."""
    state = (
        "delivered" if delivery.delivered_at else "gave_up" if delivery.gave_up_at else "pending"
    )
    return WebhookDeliveryView.model_validate(
        {
            "id": delivery.id,
            "event": delivery.event,
            "url": delivery.url,
            "state": state,
            "attempts": delivery.attempts,
            "last_status": delivery.last_status,
            "last_error": delivery.last_error,
            "next_attempt_at": _iso(delivery.next_attempt_at) if state == "pending" else None,
            "delivered_at": _iso(delivery.delivered_at),
            "created_at": _iso(delivery.created_at),
        }
    )


def _iso(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch else None
