"""The worker: claim a job, fetch and load its model, generate, upload, complete; repeat.

One process serves one GPU. It can be killed at any instant without losing a job: the lease
then expires and the orchestrator hands the job to someone else. A first SIGINT/SIGTERM stops
claiming and hands the running job back at the next denoising step; a second one exits at once.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from imagefleet.protocol import FailureCode
from imagefleet.worker.claim_request import build_claim_request
from imagefleet.worker.engines.base import StepCallback
from imagefleet.worker.handlers import load_handlers, serving
from imagefleet.worker.handlers.base import (
    InputUnavailable,
    InvalidJobInput,
    JobContext,
    OutputFile,
)
from imagefleet.worker.heartbeat import Heartbeat
from imagefleet.worker.micro_batch import run_batch
from imagefleet.worker.model_cache import ModelCache, SourceError, VerificationError
from imagefleet.worker.orchestrator_client import LeaseLost, OrchestratorClient, Unauthorized
from imagefleet.worker_protocol import (
    Assignment,
    ClaimRequest,
    ClaimResponse,
    CompletedOutput,
    CompleteRequest,
    FailRequest,
    InlineCompleteRequest,
    InlineOutput,
    StageTimings,
    WorkerFailureCode,
)

if TYPE_CHECKING:
    from imagefleet.worker.engines.diffusers_engine import DiffusersEngine

log = logging.getLogger("imagefleet.worker")
# Outputs up to this size in all are sent inside the complete call (base64 in JSON: 4/3 of it,
# well under the orchestrator's default 1 MiB body limit); bigger ones are uploaded first.
INLINE_OUTPUT_BYTES = 512 << 10


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


class _StopWaiting(BaseException):
    """Raised by the signal handler while the worker only waits for work, so that stopping an
    idle worker does not wait out its long poll. A BaseException, so that the claim's own
    error handling cannot swallow it."""


@dataclass
class WorkerConfig:
    orchestrator_url: str
    key: str
    cache_dir: Path
    node_id: str = field(
        default_factory=lambda: os.environ.get("IMAGEFLEET_NODE_ID") or socket.gethostname()
    )
    worker_id: str = field(default_factory=default_worker_id)
    device: str | None = None
    # What generates images: "diffusers" or "module.path:ClassName" (see engines/registry.py).
    engine: str = "diffusers"
    max_pixels: int = 1536 * 1536
    claim_wait_seconds: float = 20.0
    allow_private_urls: bool = False
    # On SIGTERM/SIGINT: let the running job finish for this long, then hand it back.
    shutdown_grace_seconds: float = 0.0
    # Extra handler modules ("module.path,other.module"); see worker/handlers/__init__.py.
    handler_plugins: str = ""
    # The autoscaling pool it belongs to (set by the providers as IMAGEFLEET_POOL).
    pool: str | None = field(default_factory=lambda: os.environ.get("IMAGEFLEET_POOL") or None)
    # Micro-batching: claim up to this many compatible jobs and run them as one call (1: off).
    max_batch: int = 1
    # A low-resolution preview every N denoising steps (0: none); see worker/preview.py.
    preview_every: int = 0


class Worker:
    def __init__(self, config: WorkerConfig, engine: DiffusersEngine | None = None) -> None:
        self.config = config
        self._stopping = False
        self._draining = False
        self._waiting_for_work = False
        self._hand_back_at = float("inf")
        self.client = OrchestratorClient(
            config.orchestrator_url, config.key, should_give_up=lambda: self._stopping
        )
        self.cache = ModelCache(config.cache_dir, allow_private_urls=config.allow_private_urls)
        if engine is None:
            from typing import cast

            from imagefleet.worker.engines.registry import load_engine

            # A plug-in engine only shares DiffusersEngine's interface (registry.Engine): the
            # methods this loop calls.
            engine = cast("DiffusersEngine", load_engine(config.engine, config.device))
        self.engine = engine
        bind_cache = getattr(engine, "bind_cache", None)
        if bind_cache is not None:  # a combo engine loads the job's models from our cache
            bind_cache(self.cache)
        self.handlers = serving(load_handlers(config.handler_plugins), engine)
        if not self.handlers:
            raise ValueError(f"engine {config.engine!r} serves none of the known job kinds")
        self._last_combo: tuple[str | None, str | None] = (None, None)
        self.attempts_handled = 0
        self._max_jobs: int | None = None
        # The answer to the claim sent with the last completion (its `next`), not yet acted on.
        self._following: ClaimResponse | None = None

    def request_stop(self) -> None:
        """Stop claiming. The running job may finish within the shutdown grace period; past it,
        it is interrupted at its next denoising step and handed back to the queue."""
        self._stopping = True
        self._hand_back_at = time.monotonic() + self.config.shutdown_grace_seconds

    def _must_hand_back(self) -> bool:
        return self._stopping and time.monotonic() >= self._hand_back_at

    def install_signal_handlers(self) -> None:
        def first(signum: int, _frame: FrameType | None) -> None:
            log.warning(
                "signal %s: stopping; the current job has %.0fs to finish before it is handed "
                "back (signal again to exit at once)",
                signum,
                self.config.shutdown_grace_seconds,
            )
            self.request_stop()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if self._waiting_for_work:
                raise _StopWaiting  # cut the idle long poll short instead of waiting it out

        signal.signal(signal.SIGINT, first)
        signal.signal(signal.SIGTERM, first)

    def run(self, max_jobs: int | None = None) -> None:
        log.info(
            "worker %s on node %s pulling from %s",
            self.config.worker_id,
            self.config.node_id,
            self.config.orchestrator_url,
        )
        self._max_jobs = max_jobs
        try:
            while not self._stopping and (max_jobs is None or self.attempts_handled < max_jobs):
                answer, self._following = self._following, None
                if answer is None:  # no claim came back with the last completion: ask
                    try:
                        self._waiting_for_work = True
                        left = None if max_jobs is None else max_jobs - self.attempts_handled
                        answer = self.client.claim(self._claim_request(left))
                    except _StopWaiting:
                        break
                    except Unauthorized:
                        raise
                    except Exception as exc:
                        if self._stopping:
                            break
                        log.warning("claim failed: %s; retrying", exc)
                        self._sleep(2.0)
                        continue
                    finally:
                        self._waiting_for_work = False
                if answer.quarantined:
                    log.warning("this node is quarantined: %s", answer.quarantined)
                    self._sleep(answer.retry_after_seconds)
                elif answer.drain:
                    # Being removed: no more work, but keep asking, since the autoscaler may
                    # keep this worker after all; the provider stops the process.
                    if not self._draining:
                        log.info("draining (%s): claiming no more work", answer.drain)
                    self._draining = True
                    self._sleep(answer.retry_after_seconds)
                elif answer.assignment is not None and answer.more:
                    batch = [answer.assignment, *answer.more]
                    run_batch(self, batch)
                    self.attempts_handled += len(batch)
                elif answer.assignment is not None:
                    self.process(answer.assignment)
                    self.attempts_handled += 1
        finally:
            self._hand_back_following()
            self.client.close()
            self.cache.flush()  # last uses held in memory, for LRU after a restart
        log.info(
            "worker %s stopped after %d attempts", self.config.worker_id, self.attempts_handled
        )

    def _next_claim(self) -> ClaimRequest | None:
        """The claim to send with a completion (its `next`), or None when this worker takes no
        further job: stopping, at `run`'s max_jobs (counting the one being completed), or the
        orchestrator does not answer such claims (an older version)."""
        if self._stopping or not self.client.follows_completions:
            return None
        left = None if self._max_jobs is None else self._max_jobs - self.attempts_handled - 1
        if left is not None and left <= 0:
            return None
        return self._claim_request(left)

    def _hand_back_following(self) -> None:
        """Jobs handed out with the last completion that the worker stopped before starting go
        straight back to the queue (their leases would otherwise have to run out first)."""
        answer, self._following = self._following, None
        if answer is None or answer.assignment is None:
            return
        for assignment in [answer.assignment, *answer.more]:
            self._report(
                assignment.attempt_id,
                FailureCode.worker_shutdown,
                "the worker stopped before starting the job",
                True,
            )

    def _sleep(self, seconds: float) -> None:
        """Sleeps, waking early when a stop is requested."""
        deadline = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < deadline:
            time.sleep(min(0.5, deadline - time.monotonic()))

    def _claim_request(self, left: int | None = None) -> ClaimRequest:
        """What this worker asks for; `left`: attempts it may still take."""
        return build_claim_request(
            self.config, self.engine, self.handlers, self.cache, self._last_combo, left
        )

    def process(self, assignment: Assignment) -> None:
        """Runs one attempt to its end: completed, failed, handed back, or dropped (lease lost)."""
        from imagefleet.worker.engines.base import GenerationCancelled

        attempt = assignment.attempt_id
        log.info("attempt %s: job %s (%s)", attempt, assignment.job_id, assignment.kind)
        handler = self.handlers.get(assignment.kind)
        if handler is None:
            self._report(
                attempt,
                FailureCode.worker_error,
                f"this worker has no handler for job kind {assignment.kind!r}",
                True,
            )
            return
        beat = Heartbeat(self.client, attempt, interval=assignment.lease_seconds / 3)
        beat.start()
        ctx = JobContext(
            assignment=assignment,
            engine=self.engine,
            cache=self.cache,
            fetch=self.client.fetch,
            on_step=self._step_callback(beat, attempt),
            should_stop=lambda: beat.cancelled or self._must_hand_back(),
            client=self.client,
            heartbeat=beat,
        )
        try:
            self.deliver(ctx, list(handler.run(ctx)), beat.finish, follow=True)
        except GenerationCancelled:
            if beat.cancelled:
                log.info("attempt %s: stopped (%s)", attempt, beat.cancel_reason)
            else:
                self._report(
                    attempt, FailureCode.worker_shutdown, "the worker is shutting down", True
                )
        except LeaseLost as exc:
            log.warning("attempt %s: lease lost, result dropped: %s", attempt, exc)
        except (SourceError, VerificationError) as exc:
            self._report(attempt, FailureCode.model_unavailable, str(exc), True)
        except InputUnavailable as exc:
            self._report(attempt, FailureCode.input_unavailable, str(exc), True)
        except (InvalidJobInput, ValueError) as exc:
            self._report(attempt, FailureCode.invalid_input, str(exc), False)
        except Exception as exc:
            oom = getattr(self.engine, "is_out_of_memory", lambda _: False)(exc)
            code = FailureCode.out_of_memory if oom else FailureCode.worker_error
            log.exception("attempt %s failed", attempt)
            self._report(attempt, code, f"{type(exc).__name__}: {exc}", True)
        finally:
            beat.stop()

    def deliver(
        self,
        ctx: JobContext,
        files: list[OutputFile],
        finish: Callable[[], None],
        follow: bool = False,
    ) -> None:
        """Uploads the attempt's outputs and completes it; `finish` (the heartbeat's last
        beat) runs just before the complete call. With `follow`, the completion carries the
        worker's next claim, whose answer `run` acts on instead of claiming (one request fewer
        between two jobs)."""
        assignment = ctx.assignment
        attempt = assignment.attempt_id
        # What the GPU holds now, for the claim that follows.
        self._last_combo = (assignment.combo_key, self.engine.resident_model)
        if not assignment.uploads and sum(len(f.data) for f in files) <= INLINE_OUTPUT_BYTES:
            # Small outputs through the API: sent inside the complete call (one request).
            finish()
            inline = _inline(files, ctx.timings(0.0))
            inline.next = self._next_claim() if follow else None
            self._following = self.client.complete_inline(attempt, inline).next
            log.info("attempt %s: completed (outputs inline)", attempt)
            return
        started = time.perf_counter()
        outputs = []
        for index, output in enumerate(files):
            self.upload(assignment, index, output.data, output.content_type)
            outputs.append(
                CompletedOutput(
                    index=index,
                    sha256=hashlib.sha256(output.data).hexdigest(),
                    seed=output.seed,
                    width=output.width,
                    height=output.height,
                )
            )
        timings = ctx.timings(upload_seconds=time.perf_counter() - started)
        finish()
        request = CompleteRequest(outputs=outputs, timings=timings)
        request.next = self._next_claim() if follow else None
        self._following = self.client.complete(attempt, request).next
        log.info("attempt %s: completed in %.2fs", attempt, timings.inference_seconds)

    def upload(
        self, assignment: Assignment, index: int, data: bytes, content_type: str = "image/png"
    ) -> None:
        """Straight into the store when the orchestrator handed out URLs (in parts when big),
        else through the API."""
        target = next((t for t in assignment.uploads if t.index == index), None)
        if target is None or target.content_type != content_type:
            self.client.upload(assignment.attempt_id, index, data, content_type)
        elif len(data) > target.multipart_threshold_bytes:
            self.client.upload_multipart(assignment.attempt_id, index, data, content_type)
        else:
            self.client.put_direct(target.url, data, target.content_type)

    def _report(self, attempt_id: str, code: FailureCode, message: str, retryable: bool) -> None:
        log.warning("attempt %s: %s: %s", attempt_id, code, message)
        try:
            self.client.fail(
                attempt_id,
                FailRequest(
                    code=WorkerFailureCode(code.value), message=message[:4000], retryable=retryable
                ),
            )
        except LeaseLost:
            pass
        except Exception as exc:  # the lease will expire and the job be requeued anyway
            log.warning("could not report failure of %s: %s", attempt_id, exc)

    def _step_callback(self, beat: Heartbeat, attempt_id: str) -> StepCallback:
        """The heartbeat's progress, plus previews of the latents when configured."""
        if self.config.preview_every <= 0:
            return beat.progress
        from imagefleet.worker.preview import PreviewingSteps

        def send(step: int, total: int, jpeg: bytes) -> None:
            self.client.put_preview(attempt_id, step, total, jpeg)

        return PreviewingSteps(beat.progress, send, self.config.preview_every)


def _inline(files: list[OutputFile], timings: StageTimings) -> InlineCompleteRequest:
    return InlineCompleteRequest(
        outputs=[
            InlineOutput(
                index=index,
                seed=f.seed,
                width=f.width,
                height=f.height,
                content_type=f.content_type,
                data_base64=base64.b64encode(f.data).decode(),
            )
            for index, f in enumerate(files)
        ],
        timings=timings,
    )
