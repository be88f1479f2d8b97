"""Policies by name, for the simulator, the CLI and (later) the orchestrator's settings."""

from __future__ import annotations

from imagefleet.scheduling.baselines import DeclaredModelsPolicy, FifoPolicy, LookaheadPolicy
from imagefleet.scheduling.config import PolicyConfig
from imagefleet.scheduling.decisions import SchedulingPolicy
from imagefleet.scheduling.ranking import ModelAwarePolicy

POLICY_NAMES = ("model-aware", "fifo", "declared-models", "lookahead-32")


def make_policy(name: str, config: PolicyConfig = PolicyConfig()) -> SchedulingPolicy:
    """The policy called `name` (one of `POLICY_NAMES`); `config` applies to the model-aware
    one, the baselines have no knobs."""
    if name == "model-aware":
        return ModelAwarePolicy(config)
    if name == "fifo":
        return FifoPolicy()
    if name == "declared-models":
        return DeclaredModelsPolicy()
    if name == "lookahead-32":
        return LookaheadPolicy()
    raise ValueError(f"policy: unknown policy {name!r}; expected one of {', '.join(POLICY_NAMES)}")
