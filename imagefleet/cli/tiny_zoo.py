"""`imagefleet models create-tiny-zoo`: every tiny model kind written and registered, so that
a local fleet can run checkpoint + LoRAs + VAE + embedding + ControlNet requests (and SDXL with
a refiner) on a CPU in seconds, through the same registry, download and verification path as
real models. Their weights are random: the images are noise, but every part takes effect."""

from __future__ import annotations

from pathlib import Path

import typer

from imagefleet.cli.admin import add_model
from imagefleet.cli.common import fail
from imagefleet.cli.datadir import DataDirOption, settings_for
from imagefleet.models.registry import Registration
from imagefleet.protocol import ModelBase, ModelKind

PREFIX = "tiny-"


def register(models_app: typer.Typer) -> None:
    models_app.command("create-tiny-zoo")(create_tiny_zoo)


def create_tiny_zoo(data_dir: Path | None = DataDirOption) -> None:
    """Build the tiny SD 1.5- and SDXL-shaped models, LoRAs, VAE, embeddings and ControlNet,
    and register them as tiny-*."""
    try:
        from imagefleet.tiny_models.zoo import EMBEDDING_TOKEN, build_zoo
    except ImportError as exc:
        raise fail("the tiny zoo needs the worker extra: pip install 'imagefleet[worker]'") from exc
    root = settings_for(data_dir, create=True).data_dir
    zoo = build_zoo((root / "models" / "tiny-zoo").resolve())
    sd15, sdxl = ModelBase.sd15, ModelBase.sdxl
    entries = [
        ("sd15", zoo.sd15, ModelKind.checkpoint, sd15, ()),
        ("lora", zoo.sd15_lora_peft, ModelKind.lora, sd15, ()),
        ("lora-kohya", zoo.sd15_lora_kohya, ModelKind.lora, sd15, ()),
        ("lora-other", zoo.sd15_lora_other, ModelKind.lora, sd15, ()),
        ("vae", zoo.sd15_vae, ModelKind.vae, sd15, ()),
        ("embedding", zoo.sd15_embedding_a1111, ModelKind.embedding, sd15, (EMBEDDING_TOKEN,)),
        ("controlnet", zoo.sd15_controlnet, ModelKind.controlnet, sd15, ()),
        ("sdxl", zoo.sdxl, ModelKind.checkpoint, sdxl, ()),
        ("sdxl-refiner", zoo.sdxl_refiner, ModelKind.checkpoint, sdxl, ()),
        ("sdxl-lora", zoo.sdxl_lora_peft, ModelKind.lora, sdxl, ()),
    ]
    for name, path, kind, base, triggers in entries:
        model = add_model(
            Registration(PREFIX + name, str(path), kind=kind, base=base, trigger_words=triggers),
            data_dir=data_dir,
            create=True,
        )
        typer.echo(f"registered {model.kind.value} {model.name} v{model.version} ({base.value})")
    typer.echo(f"the embedding's trigger word is {EMBEDDING_TOKEN}: write it in the prompt")
