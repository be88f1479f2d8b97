"""Fair share between owners within a tier, in two parts.

**Ranking: round robin between owners.** For its rank, a job has waited only since the later of
its submission and its owner's last claim (`FleetView.served_at`). A client's single job has
waited since it was submitted; the jobs of a client whose batch is being served have waited
only since the last of them was handed out. So owners take turns: a 10,000-job batch, whose
oldest job has always waited longest, no longer goes first job after job, while with nobody else
waiting it runs on every free GPU (nothing is held back for its own sake). Nothing is banked
and nothing lasts: an owner served long ago ranks by its jobs' own waiting time.

**Preselection: start tags.** A claim gathers candidates through indexes, and a batch must not
fill them. Each job gets a start-time fair queueing tag at submit, the later of its tier's virtual
time and its owner's previous finish tag; the owner's finish tag moves on by the job's cost over
the owner's weight. The claim reads the lowest tags of each tier (one index range scan, the same
cost with 1,000 or 1,000,000 queued): a new client's job is tagged at the current virtual time, a
batch's later jobs far ahead of it. The tier's virtual time is the lowest tag still queued (never
decreasing), so starting a job out of tag order for affinity moves nobody's clock.
"""

from __future__ import annotations


def fair_tag(
    virtual_time: float, owner_finish: float | None, cost_units: float, weight: float = 1.0
) -> tuple[float, float]:
    """A new job's start tag and its owner's new finish tag.

    `owner_finish` is None for an owner with no earlier job in this tier. `weight` is the owner's
    share (2.0 gets twice the GPU time of a 1.0 owner while both are backlogged)."""
    if weight <= 0:
        raise ValueError(f"weight: must be > 0, got {weight}")
    start = virtual_time if owner_finish is None or owner_finish < virtual_time else owner_finish
    return start, start + cost_units / weight


def advance(virtual_time: float, lowest_queued_tag: float | None) -> float:
    """The tier's virtual time after a claim: the lowest tag still queued, never moving back."""
    if lowest_queued_tag is None or lowest_queued_tag <= virtual_time:
        return virtual_time
    return lowest_queued_tag
