"""`imagefleet models add` shows a progress bar while it hashes a local model: the hash reports
every byte it reads, and the bar reaches the model's size."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from imagefleet.cli.admin import hashing_bar
from imagefleet.hashing import CHUNK, path_sha256, path_size


def test_hashing_reports_every_byte_of_a_folder_and_the_bar_shows_it(tmp_path: Path) -> None:
    model = tmp_path / "model"
    (model / "unet").mkdir(parents=True)
    (model / "model_index.json").write_text("{}")
    (model / "unet" / "weights.safetensors").write_bytes(b"x" * (2 * CHUNK + 5))
    heard: list[int] = []
    sha, size = path_sha256(model, heard.append)
    assert sum(heard) == size == path_size(model) == 2 * CHUNK + 7
    assert (sha, size) == path_sha256(model)  # the same hash with or without a listener

    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=100)
    with hashing_bar(str(model), terminal) as on_bytes:
        assert on_bytes is not None
        path_sha256(model, on_bytes)
    assert "hashing model" in screen.getvalue()

    # Nothing to show for a remote source or a console that is no terminal (a pipe, a log).
    with hashing_bar("https://example.com/m.safetensors", terminal) as none:
        assert none is None
    with hashing_bar(str(model), Console(file=io.StringIO())) as none:
        assert none is None
