"""Training checkpoints: what a folder holds, reading it back, and falling back past bad ones."""

import json
import random
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from imagefleet.hashing import file_sha256
from imagefleet.worker.training.archive import pack_checkpoint, unpack_checkpoint
from imagefleet.worker.training.checkpoint import (
    CheckpointRef,
    CorruptCheckpoint,
    RunIdentity,
    TrainingState,
    capture_rng,
    load_newest_valid,
    read_checkpoint,
    restore_rng,
    write_checkpoint,
)
from imagefleet.worker.training.engine import LoraTrainer
from imagefleet.worker.training.types import StepProgress, StopReason, TrainingStopped
from tests import training_support
from tests.training_support import CheckpointStore, tiny_params, trainer

demo_dir = training_support.demo_dir
_one_cpu_thread = training_support.one_cpu_thread


class Run:
    def __init__(self, engine: LoraTrainer, store: CheckpointStore) -> None:
        self.engine = engine
        self.store = store


@pytest.fixture(scope="module")
def run(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A run handed back at step 12 that made checkpoints 4, 8 and 12, each waited for."""
    root = tmp_path_factory.mktemp("checkpoints")
    store = CheckpointStore(root / "store")
    store.root.mkdir()
    done = [0]

    def stop() -> StopReason | None:
        if done[0] in (4, 8):
            store.wait_for(done[0])
        return StopReason.hand_back if done[0] == 12 else None

    def progress(report: StepProgress) -> None:
        done[0] = report.step

    engine = trainer(demo_dir, root / "work", tiny_params(train_text_encoder=True))
    with pytest.raises(TrainingStopped):
        engine.train(on_progress=progress, should_stop=stop, on_checkpoint=store)
    assert store.steps == [4, 8, 12]
    return Run(engine, store)


@pytest.fixture
def copies(run: Run, tmp_path: Path) -> CheckpointStore:
    """A private copy of the run's checkpoints that a test may damage."""
    store = CheckpointStore(tmp_path / "store")
    shutil.copytree(run.store.root, store.root)
    store.steps = list(run.store.steps)
    return store


def test_a_checkpoint_is_safetensors_and_json_only_with_every_piece_of_state(run: Run) -> None:
    folder = run.store.path(8)
    assert sorted(p.name for p in folder.iterdir()) == [
        "lora.safetensors",
        "optimizer.safetensors",
        "rng.safetensors",
        "state.json",
    ]
    state = json.loads((folder / "state.json").read_text())
    assert (state["format"], state["version"]) == ("imagefleet-lora-checkpoint", 1)
    assert (state["step"], state["total_steps"], state["samples_seen"]) == (8, 20, 8)
    assert state["identity"] == vars(run.engine.identity)
    assert state["lr_scheduler"]["last_epoch"] == 8
    assert state["optimizer"]["param_groups"][0]["betas"] == [0.9, 0.999]
    assert state["python_random"][0] == 3 and len(state["python_random"][1]) == 625
    assert state["numpy_random"][0] == "MT19937"
    for name, digest in state["files"].items():
        assert file_sha256(folder / name) == digest

    lora = load_file(str(folder / "lora.safetensors"))
    assert {key.split(".")[0] for key in lora} == {"unet", "text_encoder"}
    assert all(
        ("lora_A" in key or "lora_B" in key) and t.dtype == torch.float32 for key, t in lora.items()
    )
    optimizer = load_file(str(folder / "optimizer.safetensors"))
    assert {key.rsplit(".", 1)[1] for key in optimizer} == {"step", "exp_avg", "exp_avg_sq"}
    assert len(optimizer) == 3 * len(lora)
    assert set(load_file(str(folder / "rng.safetensors"))) == {"torch_cpu", "noise"}


def test_a_checkpoint_reads_back_as_the_state_it_was_made_from(run: Run) -> None:
    state = read_checkpoint(run.store.path(12))
    assert (state.step, state.samples_seen, state.identity) == (12, 12, run.engine.identity)
    assert state.source == run.store.path(12)
    assert state.optimizer["param_groups"][0]["betas"] == (0.9, 0.999)
    assert state.optimizer["state"][0]["step"].item() == 12.0


def test_the_newest_valid_checkpoint_is_used_and_the_bad_ones_are_reported(
    run: Run, copies: CheckpointStore
) -> None:
    lora = copies.path(12) / "lora.safetensors"
    data = bytearray(lora.read_bytes())
    data[-10] ^= 0xFF
    lora.write_bytes(bytes(data))
    (copies.path(8) / "state.json").unlink()

    point = load_newest_valid(reversed(copies.refs()), run.engine.identity)

    assert point.state is not None and point.state.step == 4
    assert [(s.step, s.reason) for s in point.skipped] == [
        (12, "lora.safetensors does not match its recorded sha256"),
        (8, "state.json is missing (incomplete upload?)"),
    ]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (
            lambda folder: (folder / "state.json").write_text('{"format": '),
            "state.json is unreadable",
        ),
        (lambda folder: (folder / "rng.safetensors").unlink(), "rng.safetensors is missing"),
        (lambda folder: shutil.rmtree(folder), "state.json is missing"),
        (
            lambda folder: (folder / "state.json").write_text(json.dumps({"format": "other"})),
            "format 'other' version None; this worker reads",
        ),
    ],
    ids=["truncated-json", "missing-tensors", "never-downloaded", "foreign-format"],
)
def test_each_kind_of_damage_is_a_corrupt_checkpoint_with_its_reason(
    copies: CheckpointStore, damage: Callable[[Path], object], reason: str
) -> None:
    damage(copies.path(12))
    with pytest.raises(CorruptCheckpoint, match=reason):
        read_checkpoint(copies.path(12))


def test_a_checkpoint_recorded_under_another_step_is_skipped(run: Run) -> None:
    point = load_newest_valid([CheckpointRef(12, run.store.path(8))], run.engine.identity)
    assert point.state is None
    assert point.skipped[0].reason == "holds step 8, but was recorded as step 12"


def test_a_checkpoint_of_another_run_is_skipped_naming_what_differs(run: Run) -> None:
    other = RunIdentity(run.engine.identity.params_sha256, "d" * 64, "e" * 64)
    point = load_newest_valid(run.store.refs(), other)
    assert point.state is None
    assert {s.reason for s in point.skipped} == {
        "belongs to another run (different dataset_sha256, base_model_sha256)"
    }


def test_with_no_checkpoints_the_run_starts_from_scratch(run: Run) -> None:
    point = load_newest_valid([], run.engine.identity)
    assert (point.state, point.skipped) == (None, [])


def test_options_that_do_not_change_the_weights_do_not_change_the_run_identity() -> None:
    base = RunIdentity.of(tiny_params(), "d" * 64, "e" * 64)
    renamed = RunIdentity.of(
        tiny_params(output_name="x", keep_last=9, checkpoint_every=7, trigger_words=["t"]),
        "d" * 64,
        "e" * 64,
    )
    assert renamed == base
    assert RunIdentity.of(tiny_params(learning_rate=2e-3), "d" * 64, "e" * 64) != base


def test_random_states_survive_a_round_trip_through_a_folder(tmp_path: Path) -> None:
    noise = torch.Generator().manual_seed(3)
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(4)
    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([parameter], lr=0.1)
    parameter.grad = torch.full((3,), 0.5)
    optimizer.step()
    state = TrainingState(
        identity=RunIdentity("a" * 64, "b" * 64, "c" * 64),
        step=1,
        total_steps=2,
        samples_seen=1,
        lora={"unet.p": parameter.detach().clone()},
        optimizer=optimizer.state_dict(),
        lr_scheduler={"last_epoch": 1},
        grad_scaler={},
        rng=capture_rng(noise),
    )
    expected = (
        random.random(),
        np.random.rand(),
        torch.rand(1).item(),
        torch.rand(1, generator=noise).item(),
    )

    loaded = read_checkpoint(write_checkpoint(state, tmp_path / "ckpt"))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    other_noise = torch.Generator().manual_seed(9)
    assert restore_rng(loaded.rng, other_noise) == []
    after = (
        random.random(),
        np.random.rand(),
        torch.rand(1).item(),
        torch.rand(1, generator=other_noise).item(),
    )
    assert after == expected
    assert torch.equal(
        loaded.optimizer["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"]
    )
    assert not (tmp_path / "ckpt.partial").exists()


def test_a_checkpoint_travels_as_one_archive_and_unpacks_to_a_readable_folder(
    run: Run, tmp_path: Path
) -> None:
    packed = pack_checkpoint(run.store.path(8), tmp_path / "step-8.zip")
    folder = unpack_checkpoint(packed, tmp_path / "unpacked")
    assert read_checkpoint(folder).step == 8


def test_an_archive_with_unexpected_entries_is_corrupt_and_writes_nothing_outside(
    run: Run, tmp_path: Path
) -> None:
    packed = tmp_path / "evil.zip"
    with zipfile.ZipFile(packed, "w") as archive:
        for name in ("lora.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"):
            archive.write(run.store.path(8) / name, arcname=name)
        archive.writestr("../escaped.txt", "x")
    with pytest.raises(CorruptCheckpoint, match="expected exactly"):
        unpack_checkpoint(packed, tmp_path / "unpacked")
    assert not (tmp_path / "escaped.txt").exists()
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(CorruptCheckpoint, match="not a readable checkpoint archive"):
        unpack_checkpoint(tmp_path / "junk.zip", tmp_path / "unpacked")
