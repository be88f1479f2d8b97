"""Scheduling: which queued job a claiming worker should run. Pure functions, no I/O, so the
orchestrator's claim path and the fleet simulator (`scheduling.simulator`) run the same code.

- `inputs`: what the policy sees (`Candidate`, `WorkerView`, `FleetView`, `WarmHolders`).
- `limits`: hard limits (`can_run`, `refusal`), also filtered in the claim's SQL.
- `costs`: affinity priced in seconds (`setup_parts`, `setup_seconds`).
- `fairness`: fair-share start tags for the preselection index; round robin between owners.
- `ranking`: the model-aware policy (`rank`, `best`, `choose_waiter`, `ModelAwarePolicy`).
- `baselines`: FIFO, declared models (AI Horde style), 32-item look-ahead (InvokeAI style).
- `decisions`: the interface they share (`SchedulingPolicy`, `Selection`, `Decision`).
- `policies`: the policies by name (`IMAGEFLEET_POLICY` picks the orchestrator's).
- `waiting`: why a queued job waits, and whether any worker seen could ever run it.
"""
