"""What a model file is, judged by its bytes, and the one way a pickle file is ever opened.

Names lie (a download URL may have none, a ``.safetensors`` name may hold anything), so the
cache sniffs the first bytes: a safetensors file starts with the length of its JSON header and
then ``{``; torch's zip pickles start with ``PK``, classic pickles with the protocol byte 0x80.

Pickle files run code when unpickled. They are refused unless the operator allows them, and
then opened only with ``torch.load(weights_only=True)`` (which unpickles tensors and plain
containers, nothing callable) and rewritten at once as safetensors, so nothing downstream ever
sees a pickle.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, Literal

from imagefleet.worker.source_errors import PickleRefusedError, SourceError

FileFormat = Literal["safetensors", "pickle", "unknown"]
PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin"})
MAX_SAFETENSORS_HEADER = 100 << 20
# A download URL without a file name (Civitai's /api/download/models/<id>) is saved under this
# name, then renamed after its content by normalize().
UNNAMED = "model.download"


def sniff(path: Path) -> FileFormat:
    with path.open("rb") as handle:
        head = handle.read(9)
    if len(head) == 9:
        (header_length,) = struct.unpack("<Q", head[:8])
        if 0 < header_length <= MAX_SAFETENSORS_HEADER and head[8:9] == b"{":
            return "safetensors"
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return "pickle"
    return "unknown"


def normalize(fetched: Path, *, allow_pickle: bool) -> Path:
    """Names an unnamed download after its content; converts an allowed pickle; returns the
    file to keep (or the folder, untouched).

    A file named .safetensors is kept as it is: the safetensors loader refuses anything else
    without running it. A pickle is recognised by its name or, for a download that had none, by
    its first bytes. Call it only on content whose hash was verified.
    """
    if not fetched.is_file() or fetched.suffix in (".safetensors", ".json"):
        return fetched
    found = sniff(fetched)
    if found == "safetensors":
        return fetched.rename(fetched.with_name("model.safetensors"))
    if found != "pickle" and fetched.name == UNNAMED:
        raise PickleRefusedError(
            "the download is neither a safetensors file nor a checkpoint this worker can convert"
        )
    if not allow_pickle:
        raise PickleRefusedError(
            f"{fetched.name} is a pickle file, which can run code when loaded; this worker "
            "refuses them (set IMAGEFLEET_WORKER_ALLOW_PICKLE=1 to convert it)"
        )
    stem = "model" if fetched.name == UNNAMED else Path(fetched.name).stem
    converted = pickle_to_safetensors(fetched, fetched.with_name(stem + ".safetensors"))
    fetched.unlink()
    return converted


def pickle_to_safetensors(path: Path, dest: Path) -> Path:
    """Reads a pickle checkpoint with weights_only=True and writes its tensors to dest.

    Checkpoints nest their weights (``state_dict``), A1111 embeddings keep theirs under
    ``string_to_param`` (written out as the ``emb_params`` safetensors layout); everything
    else that is a tensor is kept under its dotted path, and non-tensors are dropped.
    """
    import torch
    from safetensors.torch import save_file

    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PickleRefusedError(
            f"{path.name} cannot be read as plain tensors (torch.load weights_only=True said: "
            f"{exc}); convert it to safetensors yourself and register that file"
        ) from exc
    tensors = _tensors(loaded)
    if not tensors:
        raise SourceError(f"{path.name} holds no tensors")
    # safetensors refuses tensors that share memory; a copy of each is always safe.
    save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, str(dest))
    return dest


def _tensors(loaded: Any) -> dict[str, Any]:
    import torch

    if isinstance(loaded, dict) and "string_to_param" in loaded:
        params = loaded["string_to_param"]
        if isinstance(params, dict) and len(params) == 1:
            return {"emb_params": next(iter(params.values()))}
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    flat: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, torch.Tensor):
            flat[prefix] = value
        elif isinstance(value, dict):
            for key, child in value.items():
                walk(child, f"{prefix}.{key}" if prefix else str(key))

    walk(loaded, "")
    return flat
