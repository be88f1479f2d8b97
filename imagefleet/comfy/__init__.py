"""ComfyUI API-format graphs: node specs, validation, sampler names (torch-free; shared by the
orchestrator, which validates at submit, and the worker, which runs them)."""
