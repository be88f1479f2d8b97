"""A simulated GPU worker: its caches and what a setup physically costs.

Two caches, both least-recently-used: the GPU holds checkpoints up to its VRAM less a reserve
for activations, and up to `adapter_slots` LoRAs; the disk holds models up to its size. A job's
setup downloads what is not on disk (bytes / the node's bandwidth), loads what is not on the GPU
(fixed part + bytes / disk-to-GPU speed), or, when everything is resident but another combo is
active, pays a combo switch. Downloads and loads do not overlap generation (a worker that
prefetches would do better than simulated here).

Time accounting: a worker is paid while provisioned (from its start, or its replacement after
an interruption, to the end of the run or its interruption); that time splits into generating,
loading, downloading, lost (work of interrupted attempts) and idle.
"""

from __future__ import annotations

from collections import OrderedDict

from imagefleet.scheduling.inputs import HEAVY_ROLES, ModelNeed, SetupPrice, WorkerView
from imagefleet.scheduling.simulator.config import GB, MB, FleetConfig, GpuType


class SimWorker:
    __slots__ = (
        "adapter_loads",
        "adapter_slots",
        "alive",
        "attempt_started",
        "attempt_token",
        "bandwidth",
        "checkpoint_downloads",
        "checkpoints",
        "combo",
        "disk",
        "disk_budget",
        "disk_checkpoints",
        "disk_used",
        "download_bytes",
        "downloading_s",
        "downloads",
        "expected_free",
        "generating_s",
        "gpu",
        "gpu_adapters",
        "incarnation",
        "index",
        "job",
        "kinds",
        "loading_s",
        "loads",
        "lost_s",
        "measured",
        "node_id",
        "park_token",
        "parked_keys",
        "phases",
        "provisioned_s",
        "provisioned_since",
        "resident",
        "setup_memo",
        "slot",
        "view_cache",
        "vram_budget",
        "vram_used",
        "warm_keys",
        "worker_id",
    )

    def __init__(self, index: int, gpu: GpuType, slot: int, fleet: FleetConfig, now: float) -> None:
        self.index = index
        self.gpu = gpu
        self.slot = slot
        self.kinds = frozenset({"txt2img"})
        self.bandwidth = gpu.bandwidth_mb_s * MB
        self.vram_budget = max(0.0, gpu.vram_gb - fleet.vram_reserved_gb) * GB
        self.disk_budget = gpu.disk_gb * GB
        self.adapter_slots = fleet.adapter_slots
        self.incarnation = 0
        self.provisioned_s = 0.0
        self.generating_s = self.loading_s = self.downloading_s = self.lost_s = 0.0
        self.loads = self.adapter_loads = self.downloads = self.checkpoint_downloads = 0
        self.download_bytes = 0
        self.warm_keys: tuple[str, ...] = ()
        self.parked_keys: tuple[str, ...] = ()
        self.attempt_token = -1
        self.park_token = 0
        self.start(now)

    def start(self, now: float) -> None:
        """A fresh node in this slot: empty caches, a new node id."""
        self.incarnation += 1
        self.node_id = f"{self.gpu.name}#{self.slot}.{self.incarnation}"
        self.worker_id = self.node_id
        self.alive = True
        self.provisioned_since = now
        self.checkpoints: OrderedDict[str, int] = OrderedDict()
        self.gpu_adapters: OrderedDict[str, int] = OrderedDict()
        self.resident: set[str] = set()
        self.combo: set[str] = set()
        self.disk: OrderedDict[str, int] = OrderedDict()
        self.disk_checkpoints: OrderedDict[str, None] = OrderedDict()
        self.disk_used = 0
        self.vram_used = 0
        self.job: object | None = None
        self.attempt_started = 0.0
        self.phases = (0.0, 0.0, 0.0)
        self.expected_free = now
        self.measured = False
        self.view_cache: WorkerView | None = None
        # Setup prices by combo (`WorkerView.setup_memo`), valid until a model arrives or leaves.
        self.setup_memo: dict[str, SetupPrice] = {}

    def stop(self, now: float) -> None:
        self.alive = False
        self.provisioned_s += now - self.provisioned_since

    def mark_measured(self) -> None:
        if not self.measured:
            self.measured = True
            self.view_cache = None

    def view(self) -> WorkerView:
        """The claim's view of this worker. Its model sets are the live caches (the policy only
        reads them), so the view stays valid until the node is replaced or measures its speed."""
        if self.view_cache is None:
            self.view_cache = self._view()
        return self.view_cache

    def _view(self) -> WorkerView:
        return WorkerView(
            worker_id=self.worker_id,
            node_id=self.node_id,
            kinds=self.kinds,
            max_pixels=self.gpu.max_pixels,
            vram_mb=int(self.gpu.vram_gb * 1024),
            gpu_type=self.gpu.name,
            resident_combos=self.combo,
            resident_models=self.resident,
            cached_models=self.disk,
            bandwidth_bytes_per_s=self.bandwidth,
            seconds_per_unit=self.gpu.seconds_per_unit if self.measured else None,
            setup_memo=self.setup_memo,
        )

    def prefill(self, checkpoints: list[ModelNeed], loras: list[ModelNeed]) -> None:
        """Warm start: these models on disk (least recently used first), and the most recently
        used checkpoints that fit on the GPU."""
        self.setup_memo.clear()
        for sha256, size, role in [*checkpoints, *loras]:
            self.disk[sha256] = size
            self.disk_used += size
            if role in HEAVY_ROLES:
                self.disk_checkpoints[sha256] = None
        for sha256, size, _ in reversed(checkpoints):
            if self.vram_used + size > self.vram_budget:
                break
            self.checkpoints[sha256] = size
            self.checkpoints.move_to_end(sha256, last=False)
            self.vram_used += size
            self.resident.add(sha256)

    def setup(
        self, combo: str, models: tuple[ModelNeed, ...], fleet: FleetConfig
    ) -> tuple[float, float]:
        """Makes `models` resident with `combo` active; returns (download s, load s)."""
        needed = {sha256 for sha256, _, _ in models}
        arrivals = self.downloads + self.loads + self.adapter_loads
        download_bytes = 0
        disk = self.disk
        for sha256, size, role in models:
            if sha256 in disk:
                disk.move_to_end(sha256)
                if role in HEAVY_ROLES:
                    self.disk_checkpoints.move_to_end(sha256)
                continue
            download_bytes += size
            self.downloads += 1
            if role in HEAVY_ROLES:
                self.checkpoint_downloads += 1
            self._evict_disk(size, needed)
            disk[sha256] = size
            self.disk_used += size
            if role in HEAVY_ROLES:
                self.disk_checkpoints[sha256] = None
        load = 0.0
        speed = fleet.disk_to_gpu_gb_s * GB
        for sha256, size, role in models:
            if role in HEAVY_ROLES:
                if sha256 in self.checkpoints:
                    self.checkpoints.move_to_end(sha256)
                    continue
                self._evict_checkpoints(size, needed)
                self.checkpoints[sha256] = size
                self.vram_used += size
                self.loads += 1
                load += fleet.checkpoint_load_s + size / speed
            else:
                if sha256 in self.gpu_adapters:
                    self.gpu_adapters.move_to_end(sha256)
                    continue
                while len(self.gpu_adapters) >= self.adapter_slots:
                    self._evict_adapter(needed)
                self.gpu_adapters[sha256] = size
                self.adapter_loads += 1
                load += fleet.adapter_load_s + size / speed
            self.resident.add(sha256)
        if self.downloads + self.loads + self.adapter_loads != arrivals:
            self.setup_memo.clear()  # a model arrived (and others may have left)
        if load == 0.0 and combo not in self.combo:
            load = fleet.combo_switch_s
        self.combo.clear()
        self.combo.add(combo)
        self.download_bytes += download_bytes
        return download_bytes / self.bandwidth, load

    def _evict_disk(self, size: int, needed: set[str]) -> None:
        disk = self.disk
        skipped = 0
        while disk and self.disk_used + size > self.disk_budget and skipped < len(disk):
            sha256 = next(iter(disk))
            if sha256 in needed:
                disk.move_to_end(sha256)
                skipped += 1
                continue
            self.disk_used -= disk.pop(sha256)
            self.disk_checkpoints.pop(sha256, None)

    def _evict_checkpoints(self, size: int, needed: set[str]) -> None:
        checkpoints = self.checkpoints
        skipped = 0
        while (
            checkpoints and self.vram_used + size > self.vram_budget and skipped < len(checkpoints)
        ):
            sha256 = next(iter(checkpoints))
            if sha256 in needed:
                checkpoints.move_to_end(sha256)
                skipped += 1
                continue
            self.vram_used -= checkpoints.pop(sha256)
            self.resident.discard(sha256)

    def _evict_adapter(self, needed: set[str]) -> None:
        for sha256 in self.gpu_adapters:
            if sha256 not in needed:
                del self.gpu_adapters[sha256]
                self.resident.discard(sha256)
                return
        raise ValueError(
            f"fleet.adapter_slots: a job needs more LoRAs than the {self.adapter_slots} slots"
        )
