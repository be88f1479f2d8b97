"""The model-aware policy's knobs, every one in seconds or bytes so an operator can reason about
them ("a paid job counts as if it had waited 5 minutes longer"), with defaults that match the
simulator's default fleet (docs/simulator.md)."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Weights and price estimates for `scheduling.ranking`.

    - `aging_bound_s`: no job should wait longer; from `aging_bound_s - aging_lead_s` on, a job
      outranks everything the worker can run (the lead leaves time to load its models, and
      among such jobs a warm one at most half the lead younger may go first).
    - `seconds_per_priority`: head start per priority point (the store's `tier_priority`, e.g.
      free 0, paid 10: a paid job is ranked as if it had waited 300 s longer).
    - `setup_weight`: how many seconds of queueing one second of model loading on this worker
      is worth. Well above 1: a load spends GPU time every queued job waits behind, and what
      stays loaded serves the next jobs of that combo too.
    - `download_weight`: the same for one second of downloading, at this worker's measured
      bandwidth. A download is priced in seconds of this worker's link, so one 7 GB checkpoint
      costs a 125 MB/s node 8x what it costs a 1 GB/s one; at 6, a slow-link worker prices a
      cold SDXL download (about 55 s) above the paid tier's 300 s head start and runs work for
      models on its disk instead, leaving the download to a fast-link node or to a later claim
      (aging still bounds the wait). At 1 (the earlier default) consumer nodes kept downloading
      checkpoints their small disks had evicted: in the simulator 5 to 20 all did 2% better in
      images per dollar and lower paid p95 than 1 (docs/benchmarks.md, "Why the misses").
    - `default_bandwidth_bytes_per_s`, `disk_to_gpu_bytes_per_s`, `checkpoint_load_s`,
      `adapter_load_s`, `combo_switch_s`: price a setup in seconds: a download is size /
      bandwidth, a load from disk a fixed part plus size / disk-to-GPU speed; switching between
      combos whose models are all resident costs `combo_switch_s`.
    - `fairness_weight`: round robin between owners of a tier: a job ranks this many seconds
      later for every second its owner was being served while it waited. 1 makes a job's wait
      count only from its owner's last claim (round robin). Above 1 a busy owner's jobs sink
      while it is served, which in the simulator held the heaviest ordinary users back as hard
      as batches and tipped a busy fleet into overload (docs/benchmarks.md).
    - `head_start_jobs`: the share of the fleet a tier's head start covers, in jobs running at
      once per owner. While an owner has this many jobs claimed and unfinished, its other queued
      jobs rank without the head start (as if free-tier), so a paying client's 4,000-job batch
      goes ahead of free work only on its share of the GPUs and its backlog beyond that competes
      on waiting time alone; aging still applies to every job. Counted in jobs, not cost units,
      so one value means the same in the simulator and the orchestrator (whose cost units are
      megapixel-steps). 0: no limit (every job of a priority tier gets the head start).
    - `reference_seconds_per_unit`: generation time per cost unit for a worker that has not
      measured its own yet.
    - `small_gpu_s`: a job that ran out of memory on a GPU ranks this many seconds later on
      GPUs no larger (a bigger one should take it first; with nothing else to do, one that
      size still may).
    - `max_defer_s`, `defer_margin_s`: leave a job for a busy worker that holds its combo when
      that worker is expected to start it within `max_defer_s` and sooner, by at least the
      margin, than this worker could set it up.
    """

    aging_bound_s: float = 3600.0
    aging_lead_s: float = 300.0
    seconds_per_priority: float = 30.0
    setup_weight: float = 10.0
    download_weight: float = 6.0
    fairness_weight: float = 1.0
    head_start_jobs: float = 0.0
    default_bandwidth_bytes_per_s: float = 125e6
    disk_to_gpu_bytes_per_s: float = 1.5e9
    checkpoint_load_s: float = 2.0
    adapter_load_s: float = 0.3
    combo_switch_s: float = 0.3
    reference_seconds_per_unit: float = 5.0
    max_defer_s: float = 30.0
    defer_margin_s: float = 2.0
    small_gpu_s: float = 1800.0

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value != value:
                raise ValueError(f"policy.{spec.name}: expected a number, got {value!r}")
            if value < 0:
                raise ValueError(f"policy.{spec.name}: must be >= 0, got {value!r}")
        for name in ("default_bandwidth_bytes_per_s", "disk_to_gpu_bytes_per_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"policy.{name}: must be > 0, got {getattr(self, name)}")
        if self.aging_lead_s >= self.aging_bound_s:
            raise ValueError(
                f"policy.aging_lead_s: must be below aging_bound_s ({self.aging_bound_s}), "
                f"got {self.aging_lead_s}"
            )

    @property
    def urgent_after_s(self) -> float:
        """Wait after which a job outranks everything."""
        return self.aging_bound_s - self.aging_lead_s
