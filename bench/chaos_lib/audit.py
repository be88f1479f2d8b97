"""The audit after a chaos run: the whole database read once everything has stopped, and every
invariant checked (none lost, exactly once, files as recorded)."""

from __future__ import annotations

import hashlib
import io
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from sqlalchemy import func, select

from bench.chaos_lib.fleet import ChaosFleet
from bench.chaos_lib.report import ChaosReport
from imagefleet.store.database import Database
from imagefleet.store.tables import artifacts, attempts, jobs, nodes
from tests.harness.races import AnswerLog, contradictions

# Worker log lines that mean an attempt was abandoned because its lease was gone (409 answers).
DROPPED_MARKERS = ("lease lost, result dropped", "stopped (lease lost")
SERVER_ERROR = re.compile(r'HTTP/1\.[01]" 5\d\d')


def audit(report: ChaosReport, fleet: ChaosFleet, acknowledged: Sequence[str | None]) -> None:
    """Reads the whole database once everything has stopped and checks every invariant."""
    config = report.config
    violations = report.violations
    db = Database(fleet.audit_url)
    try:
        with db.read() as conn:
            job_rows = conn.execute(
                select(
                    jobs.c.id,
                    jobs.c.status,
                    jobs.c.result_attempt_id,
                    jobs.c.attempts,
                    jobs.c.params,
                )
            ).all()
            attempt_rows = conn.execute(
                select(
                    attempts.c.id,
                    attempts.c.job_id,
                    attempts.c.outcome,
                    attempts.c.node_id,
                    attempts.c.started_at,
                )
            ).all()
            artifact_rows = conn.execute(
                select(
                    artifacts.c.key,
                    artifacts.c.job_id,
                    artifacts.c.attempt_id,
                    artifacts.c.idx,
                    artifacts.c.sha256,
                    artifacts.c.accepted,
                )
            ).all()
            report.quarantined_nodes = conn.execute(
                select(func.count()).select_from(nodes).where(nodes.c.quarantined_at.is_not(None))
            ).scalar_one()
    finally:
        db.dispose()

    missing = [i for i, job_id in enumerate(acknowledged) if job_id is None]
    if missing:
        violations.append(f"{len(missing)} submits never acknowledged (first: #{missing[0]})")
    acked = {job_id for job_id in acknowledged if job_id is not None}
    if len(acked) != len(acknowledged) - len(missing):
        violations.append("two different submits were answered with the same job")
    by_id = {row.id: row for row in job_rows}
    extra = set(by_id) - acked
    if extra:
        violations.append(
            f"{len(extra)} jobs in the database that no answer named: {sorted(extra)[:3]}"
        )

    attempts_of: dict[str, list[Any]] = defaultdict(list)
    for attempt in attempt_rows:
        attempts_of[attempt.job_id].append(attempt)
    artifacts_of: dict[str, list[Any]] = defaultdict(list)
    for artifact in artifact_rows:
        artifacts_of[artifact.job_id].append(artifact)

    statuses = Counter(row.status for row in job_rows)
    report.succeeded = statuses.get("succeeded", 0)
    report.failed = statuses.get("failed", 0)
    lost = [
        job_id for job_id in acked if job_id not in by_id or by_id[job_id].status != "succeeded"
    ]
    report.lost = len(lost)
    if lost:
        sample = [(j, by_id[j].status if j in by_id else "missing") for j in sorted(lost)[:3]]
        violations.append(f"{len(lost)} acknowledged jobs did not succeed, e.g. {sample}")
    if report.succeeded != config.jobs:
        violations.append(f"{report.succeeded} jobs succeeded, expected {config.jobs}")

    store_root = fleet.data_dir / "artifacts"
    duplicates = 0
    for row in job_rows:
        tries = attempts_of[row.id]
        won = [a for a in tries if a.outcome == "succeeded"]
        accepted = [a for a in artifacts_of[row.id] if a.accepted]
        accepted_attempts = {a.attempt_id for a in accepted}
        expected = int(_params(row.params).get("num_images", 1))
        if len(won) > 1 or len(accepted_attempts) > 1 or len(accepted) > expected:
            duplicates += 1
            violations.append(
                f"job {row.id}: {len(won)} succeeded attempts, accepted artifacts from "
                f"{len(accepted_attempts)} attempts ({len(accepted)} files)"
            )
        if any(a.outcome == "running" for a in tries):
            violations.append(f"job {row.id} ({row.status}) still has a running attempt")
        if row.attempts != len(tries):
            violations.append(
                f"job {row.id}: attempt counter {row.attempts}, {len(tries)} attempt rows"
            )
        if row.status != "succeeded":
            continue
        if [a.id for a in won] != [row.result_attempt_id]:
            violations.append(
                f"job {row.id}: result attempt {row.result_attempt_id}, succeeded attempts "
                f"{[a.id for a in won]}"
            )
        if accepted_attempts != {row.result_attempt_id} or sorted(a.idx for a in accepted) != list(
            range(expected)
        ):
            violations.append(
                f"job {row.id}: accepted outputs {sorted(a.idx for a in accepted)} from "
                f"{sorted(accepted_attempts)}, expected 0..{expected - 1} from its result attempt"
            )
        for artifact in accepted:
            problem = _check_png(store_root / artifact.key, artifact.sha256, config.size)
            if problem:
                violations.append(f"job {row.id} output {artifact.idx}: {problem}")
    report.duplicates = duplicates

    report.attempts_histogram = dict(Counter(len(attempts_of[row.id]) for row in job_rows))
    report.outcomes = dict(Counter(row.outcome for row in attempt_rows))
    # A killed worker's last attempt is the one the kill interrupted, if it had not finished;
    # its earlier attempts may have expired for other reasons (an orchestrator restart).
    last_on_node: dict[str, Any] = {}
    for attempt in sorted(attempt_rows, key=lambda a: a.started_at):
        last_on_node[attempt.node_id] = attempt
    report.kill_interrupted = sum(
        1
        for node in fleet.killed_nodes
        if node in last_on_node and last_on_node[node].outcome == "lease_expired"
    )
    report.dropped_by_workers = sum(
        text.count(marker)
        for path in fleet.worker_logs()
        if path.exists()
        for text in [path.read_text(errors="replace")]
        for marker in DROPPED_MARKERS
    )
    report.server_errors = sum(
        len(SERVER_ERROR.findall(path.read_text(errors="replace")))
        for path in fleet.orchestrator_logs()
        if path.exists()
    )
    report.worker_starts = [w.ready_after for w in fleet.all_workers() if w.ready_after is not None]
    report.unexpected_exits = list(fleet.unexpected_exits)
    violations += [f"unexpected exit: {text}" for text in fleet.unexpected_exits]
    del violations[50:]  # one broken invariant tends to repeat; the first ones tell the story


def audit_attacks(report: ChaosReport, fleet: ChaosFleet, log: AnswerLog) -> None:
    """Every answer the timing attackers got, checked against the database."""
    report.attack_calls = dict(Counter(answer.action for answer in log.answers))
    db = Database(fleet.audit_url)
    try:
        with db.read() as conn:
            job_rows = {row.id: row for row in conn.execute(select(jobs)).all()}
            attempt_rows = {row.id: row for row in conn.execute(select(attempts)).all()}
            accepted = [
                (row.job_id, row.attempt_id, row.idx)
                for row in conn.execute(
                    select(artifacts.c.job_id, artifacts.c.attempt_id, artifacts.c.idx).where(
                        artifacts.c.accepted.is_(True)
                    )
                ).all()
            ]
    finally:
        db.dispose()
    # Answers lost with an orchestrator killed mid-call never reached the log; 503s while the
    # database is cut are the documented answer to an outage, not a finding.
    answers = [a for a in log.answers if a.status != 503]
    problems = contradictions(answers, job_rows, attempt_rows, accepted)
    report.contradicted = len(problems)
    report.violations += [f"timing attack: {p}" for p in problems[:20]]


def _params(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    import json

    parsed = json.loads(value)
    return parsed if isinstance(parsed, dict) else {}


def _check_png(path: Path, sha256: str, size: int) -> str | None:
    """None when the file is there, hashes as recorded and is a PNG of the requested size."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"file missing ({exc})"
    if hashlib.sha256(data).hexdigest() != sha256:
        return "file does not match its recorded sha256"
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "PNG" or image.size != (size, size):
                return f"{image.format} of {image.size}, expected a {size}x{size} PNG"
    except OSError as exc:
        return f"not an image ({exc})"
    return None
