"""A tiny random-weight depth estimator (transformers DPT) for tests and demos: the layout a
real one (e.g. Intel/dpt-hybrid-midas) is registered in, at a few hundred kilobytes."""

from __future__ import annotations

from pathlib import Path


def save_tiny_depth(dest: Path, seed: int = 0) -> Path:
    """A DPTForDepthEstimation folder (config.json + safetensors) at `dest`."""
    import torch
    from transformers import DPTConfig, DPTForDepthEstimation

    config = DPTConfig(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=37,
        image_size=32,
        patch_size=8,
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        backbone_out_indices=[0, 1, 2, 3],
        head_in_index=-1,
    )
    torch.manual_seed(seed)
    model = DPTForDepthEstimation(config).eval()
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(dest))
    return dest
