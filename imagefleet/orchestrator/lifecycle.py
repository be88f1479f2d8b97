"""The job lifecycle: every named state transition, each one database transaction.

Routes and CLI commands only translate to and from these calls. Client transitions (submit,
cancel and the owner's reads) live in client_transitions.py, input uploads in
input_transitions.py (train_lora datasets fetched by URL or s3:// in dataset_import.py);
worker transitions (claim, heartbeat, complete, fail, reap_expired, grace_leases) in
worker_transitions.py (training checkpoints in checkpoint_transitions.py and
checkpoint_direct.py), their file uploads in worker_files.py and their batched forms in
worker_batches.py; what happens after a failure is the pure `decide_retry` in retry.py.
Locking and the compare-and-set rule are described in docs/architecture.md
("Transitions and locking").
"""

from __future__ import annotations

from imagefleet.orchestrator.client_transitions import ClientTransitions, Cursor
from imagefleet.orchestrator.dataset_import import DatasetImports
from imagefleet.orchestrator.transitions import to_datetime
from imagefleet.orchestrator.worker_batches import WorkerBatches
from imagefleet.orchestrator.worker_files import output_key


class JobLifecycle(ClientTransitions, DatasetImports, WorkerBatches):
    """Both sides of the lifecycle over one database, settings object and clock."""


__all__ = ["Cursor", "JobLifecycle", "output_key", "to_datetime"]
