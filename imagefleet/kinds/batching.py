"""Micro-batching: which generation jobs may run as one pipeline call.

Two jobs share a batch key when one denoising call can make both jobs' images exactly as each
would alone: the same models (LoRA weights included: the combo key leaves them out), size,
steps, guidance, sampler and clip skip. Prompts, seeds, image counts and the safety filter stay
per job: prompts become per-image embeddings, seeds per-image generators, the filter runs on
each image after. None means never batched: a ControlNet (a control image per job), a refiner
or a hires pass (second passes the batched call does not make), and the samplers that draw noise
from a seed of their own instead of the per-image generators (DPM++ SDE's Brownian tree), since
a batch of those could not repeat each job's pixels.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from imagefleet.samplers import Sampler

# Per-job fields: everything else in the params must be equal for jobs to batch.
PER_JOB_FIELDS = frozenset({"prompt", "negative_prompt", "seed", "num_images", "safety_filter"})
# Samplers seeded apart from the pipeline's generators (engines/schedulers.py seed_scheduler).
SELF_SEEDED = frozenset({Sampler.dpmpp_sde, Sampler.dpmpp_sde_karras})


def generation_batch_key(kind: str, params: Any) -> str | None:
    """The batch key of a generation kind's params (a pydantic model), or None; see above."""
    if params.controlnet is not None or params.refiner is not None or params.hires is not None:
        return None
    if params.scheduler in SELF_SEEDED:
        return None
    shared = params.model_dump(mode="json", exclude=set(PER_JOB_FIELDS))
    canonical = json.dumps({"kind": kind, **shared}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
