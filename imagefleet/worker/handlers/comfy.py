"""comfy on the worker: makes the graph's combo resident through the model manager (LoRAs,
VAE and ControlNet applied, undone after the job), runs the graph, and writes each saved image
as a PNG that carries the graph in its `prompt` text chunk, as ComfyUI's own files do."""

from __future__ import annotations

import io
import json
import weakref
from typing import TYPE_CHECKING, Any

from imagefleet.comfy.registry import node_specs
from imagefleet.errors import ApiError
from imagefleet.worker.handlers.base import InvalidJobInput, JobContext, OutputFile

if TYPE_CHECKING:
    from imagefleet.worker.engines.model_manager import ModelManager
    from imagefleet.worker.model_cache import ModelCache

_STAGES = {"download": "download", "load": "model_load", "adapters": "adapter"}


class ComfyHandler:
    kind = "comfy"

    def __init__(self) -> None:
        # One model manager per worker cache: it owns what stays resident between jobs.
        self._managers: weakref.WeakKeyDictionary[ModelCache, ModelManager] = (
            weakref.WeakKeyDictionary()
        )

    def supports(self, engine: Any) -> bool:
        """Only torch engines: the graph runs on diffusers components, not on the engine's
        txt2img call, so plug-in engines without a torch device do not advertise comfy."""
        return getattr(engine, "torch_device", None) is not None

    def run(self, ctx: JobContext) -> list[OutputFile]:
        from imagefleet.kinds import get_kind
        from imagefleet.kinds.comfy import checked_graph, input_name, model_name
        from imagefleet.worker.comfy import node_types
        from imagefleet.worker.comfy.executor import execute
        from imagefleet.worker.comfy.run import GraphRun
        from imagefleet.worker.engines.model_specs import spec_from_ref
        from imagefleet.worker.engines.timings import StageClock

        params = get_kind(self.kind).parse(ctx.assignment.params)
        types = node_types()
        try:
            nodes = checked_graph(params.graph, node_specs())
        except ApiError as exc:
            raise InvalidJobInput(str(exc)) from exc
        models = [spec_from_ref(ref) for ref in ctx.assignment.models]
        combo = frozenset((ref.kind.value, ref.name) for ref in ctx.assignment.models)
        clock = StageClock()
        manager = self._manager(ctx)
        with manager.prepare(models, clock=clock, combo=ctx.assignment.combo_key) as ready:
            run = GraphRun(
                pipeline=ready.pipeline,
                is_sdxl=ready.is_sdxl,
                combo=combo,
                load_input=ctx.input_image,
                on_progress=ctx.on_step,
                should_stop=ctx.should_stop,
                name_of=lambda name: model_name(name).rpartition("@")[0] or model_name(name),
                input_names={n: input_name(n) for n, node in nodes.items()},
            )
            with ctx.stage("inference"):
                execute(nodes, types, run)
        for stage, name in _STAGES.items():
            ctx.seconds[name] = ctx.seconds.get(name, 0.0) + getattr(clock, f"{stage}_seconds")
        return _pngs(run.saved, params.graph)

    def _manager(self, ctx: JobContext) -> ModelManager:
        from imagefleet.worker.engines.model_manager import ModelManager

        manager = self._managers.get(ctx.cache)
        if manager is None:
            manager = ModelManager(ctx.cache, device=str(ctx.engine.torch_device))
            self._managers[ctx.cache] = manager
        return manager


def _pngs(saved: list[Any], graph: dict[str, Any]) -> list[OutputFile]:
    from PIL.PngImagePlugin import PngInfo

    from imagefleet.worker.comfy.images import to_pil

    files = []
    for batch in saved:
        for image in to_pil(batch.images):
            info = PngInfo()
            info.add_text("prompt", json.dumps(graph))
            info.add_text("imagefleet", json.dumps({"node": batch.node_id, "type": batch.type}))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", pnginfo=info)
            files.append(OutputFile(buffer.getvalue(), width=image.width, height=image.height))
    return files


HANDLER = ComfyHandler()
