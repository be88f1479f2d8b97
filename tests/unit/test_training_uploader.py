"""The checkpoint uploader: a bounded hand-over on its own thread, never blocking its caller."""

import threading
from pathlib import Path

import torch

from imagefleet.worker.training.checkpoint import RunIdentity, TrainingState, capture_rng
from imagefleet.worker.training.uploader import CheckpointUploader


def _state(step: int) -> TrainingState:
    return TrainingState(
        identity=RunIdentity("a" * 64, "b" * 64, "c" * 64),
        step=step,
        total_steps=100,
        samples_seen=step,
        lora={"unet.p": torch.full((2,), float(step))},
        optimizer={"state": {}, "param_groups": []},
        lr_scheduler={},
        grad_scaler={},
        rng=capture_rng(torch.Generator().manual_seed(0)),
    )


class BlockingCallback:
    """Blocks on the first checkpoint until released; records every step it is handed."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.steps: list[int] = []
        self.had_files: list[bool] = []

    def __call__(self, step: int, folder: Path) -> None:
        self.started.set()
        assert self.release.wait(timeout=60)
        self.had_files.append((folder / "state.json").is_file())
        self.steps.append(step)


def test_while_one_checkpoint_is_in_hand_only_the_newest_waits(tmp_path: Path) -> None:
    callback = BlockingCallback()
    uploader = CheckpointUploader(tmp_path, callback)
    uploader.submit(_state(1))
    assert callback.started.wait(timeout=60)
    uploader.submit(_state(2))  # returns at once although step 1 is still being handed over
    uploader.submit(_state(3))
    callback.release.set()
    uploader.drain()
    report = uploader.close(drop_waiting=False)
    assert callback.steps == [1, 3]
    assert callback.had_files == [True, True]
    assert (report.finished, report.superseded, report.failed) == ([1, 3], [2], [])
    assert list(tmp_path.iterdir()) == []  # folders are removed once handed over


def test_closing_hands_over_the_waiting_checkpoint_unless_told_to_drop_it(tmp_path: Path) -> None:
    for drop, expected in ((False, [1, 2]), (True, [1])):
        callback = BlockingCallback()
        uploader = CheckpointUploader(tmp_path / str(drop), callback)
        uploader.submit(_state(1))
        assert callback.started.wait(timeout=60)
        uploader.submit(_state(2))
        closer = threading.Thread(target=uploader.close, kwargs={"drop_waiting": drop})
        closer.start()
        callback.release.set()
        closer.join(timeout=60)
        assert callback.steps == expected
        assert uploader.close(drop_waiting=drop).finished == expected  # closing again is harmless


def test_a_callback_that_raises_is_recorded_and_the_next_checkpoint_still_goes(
    tmp_path: Path,
) -> None:
    handed: list[int] = []

    def flaky(step: int, folder: Path) -> None:
        if step == 1:
            raise TimeoutError("upload timed out")
        handed.append(step)

    uploader = CheckpointUploader(tmp_path, flaky)
    uploader.submit(_state(1))
    uploader.drain()
    uploader.submit(_state(2))
    report = uploader.close(drop_waiting=False)
    assert report.failed == [(1, "TimeoutError: upload timed out")]
    assert report.finished == [2] == handed
