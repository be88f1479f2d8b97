"""``hf:`` model sources: a Hugging Face repository, a revision, and only the files a kind needs.

``hf:org/name`` is a whole repository, ``hf:org/name@revision`` pins a branch, tag or commit
(pin a commit: branches move, and the registry's sha256 would then stop matching), and
``hf:org/name[@revision]/path/in/repo.safetensors`` is one file of it. Repositories often hold
several copies of the same model (an fp16 variant, a single-file checkpoint beside the diffusers
folder, pickles, ONNX exports), so each kind fetches only what it loads: a checkpoint its
diffusers folder, a VAE or ControlNet its config and weights, a LoRA or embedding its one
safetensors file. Pickles and code are never fetched.

Downloads go through the Hub's own cache (reused across models, pre-seedable on an air-gapped
machine with HF_HUB_OFFLINE=1) and are then copied out, following the cache's symlinks.
"""

from __future__ import annotations

import fnmatch
import shutil
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from imagefleet.worker.source_errors import SourceError

PREFIX = "hf:"
# The patterns used when the kind is not known: every weight and config, never pickles or code.
ANY_KIND = ("*.json", "*.txt", "*.safetensors", "*.model")
_FOLDER = ("model_index.json", "*/*.json", "*/*.txt", "*/*.model", "*/*.safetensors")
_COMPONENT = ("config.json", "diffusion_pytorch_model.safetensors")
PATTERNS: dict[str, tuple[str, ...]] = {
    "checkpoint": _FOLDER,
    "vae": _COMPONENT,
    "controlnet": _COMPONENT,
    "lora": ("*.safetensors",),
    "embedding": ("*.safetensors",),
}
# Never loaded by the worker: the safety checker is off, and variants are separate copies.
IGNORED = ("safety_checker/*", "*.fp16.safetensors", "*.non_ema.safetensors", "*.ema.safetensors")
SINGLE_FILE_KINDS = frozenset({"lora", "embedding"})


@dataclass(frozen=True)
class HfSource:
    repo: str
    revision: str | None
    path: str | None  # one file inside the repository, or None for the repository


def parse(source: str) -> HfSource:
    """Splits ``hf:org/name[@revision][/path]``; raises SourceError naming the expected form."""
    body = source.removeprefix(PREFIX)
    org, slash, rest = body.partition("/")
    name_and_rev, _, path = rest.partition("/")
    name, at, revision = name_and_rev.partition("@")
    if not slash or not org or not name or (at and not revision):
        raise SourceError(
            f"{source!r} is not an hf: source; expected hf:org/name, hf:org/name@revision or "
            "hf:org/name@revision/path/in/repo.safetensors"
        )
    if path and not path.endswith((".safetensors", ".json")):
        raise SourceError(f"{source!r}: only .safetensors and .json files are fetched from hf:")
    return HfSource(repo=f"{org}/{name}", revision=revision or None, path=path or None)


def fetch_hf(
    source: str, dest: Path, *, kind: str | None, max_bytes: int, token: SecretStr | None
) -> Path:
    """Copies what ``kind`` needs from the repository into dest; returns the model's path."""
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
    except ImportError as exc:  # the worker extra installs it
        raise SourceError(
            "hf: sources need huggingface_hub (pip install imagefleet[worker])"
        ) from exc
    spec = parse(source)
    secret = token.get_secret_value() if token is not None else None
    try:
        if spec.path is not None:
            fetched = Path(
                hf_hub_download(spec.repo, spec.path, revision=spec.revision, token=secret)
            )
            dest.mkdir(parents=True, exist_ok=True)
            target = dest / Path(spec.path).name
            shutil.copyfile(fetched, target)
            _check_size([target], max_bytes, source)
            return target
        patterns = list(PATTERNS.get(kind or "", ANY_KIND))
        snapshot = Path(
            snapshot_download(
                spec.repo,
                revision=spec.revision,
                allow_patterns=patterns,
                ignore_patterns=list(IGNORED),
                token=secret,
            )
        )
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(f"download of {source} failed: {exc}") from exc
    files = [
        file
        for file in sorted(snapshot.rglob("*"))
        if file.is_file() and _wanted(file.relative_to(snapshot).as_posix(), patterns)
    ]
    if not files:
        raise SourceError(f"{source} has no files of the kind {kind or 'model'} ({patterns})")
    _check_size(files, max_bytes, source)
    if kind in SINGLE_FILE_KINDS:
        if len(files) != 1:
            names = ", ".join(f.relative_to(snapshot).as_posix() for f in files)
            raise SourceError(
                f"{source} holds several files ({names}); name one: {source}/<file>.safetensors"
            )
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / files[0].name
        shutil.copyfile(files[0], target)
        return target
    for file in files:
        target = dest / file.relative_to(snapshot)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, target)  # follows the cache's symlinks to the blobs
    return dest


def _wanted(relative: str, patterns: list[str]) -> bool:
    # The Hub's filter lets "*" cross folders; the copy applies the same rule, minus IGNORED.
    return any(fnmatch.fnmatch(relative, p) for p in patterns) and not any(
        fnmatch.fnmatch(relative, p) for p in IGNORED
    )


def _check_size(files: list[Path], max_bytes: int, source: str) -> None:
    total = sum(f.stat().st_size for f in files)
    if total > max_bytes:
        raise SourceError(f"{source} is {total} bytes, larger than the registered {max_bytes}")
