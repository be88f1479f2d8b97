"""API-format ComfyUI graphs for tests and benchmarks, as ComfyUI's "Save (API)" writes them."""

from __future__ import annotations

from typing import Any


def txt2img(
    checkpoint: str = "demo.safetensors",
    *,
    prompt: str = "a photo of the cat",
    seed: int = 42,
    steps: int = 2,
    size: int = 64,
    batch: int = 1,
    sampler: str = "euler",
    scheduler: str = "normal",
) -> dict[str, Any]:
    """ComfyUI's default workflow (node ids and titles as it writes them)."""
    graph: dict[str, Any] = {
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed,
                "steps": steps,
                "cfg": 7.0,
                "sampler_name": sampler,
                "scheduler": scheduler,
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": size, "height": size, "batch_size": batch},
        },
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {
            "class_type": "SaveImage",
            "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]},
        },
    }
    for node in graph.values():
        node["_meta"] = {"title": TITLES.get(node["class_type"], node["class_type"])}
    return graph


TITLES = {
    "KSampler": "KSampler",
    "CheckpointLoaderSimple": "Load Checkpoint",
    "EmptyLatentImage": "Empty Latent Image",
    "CLIPTextEncode": "CLIP Text Encode (Prompt)",
    "VAEDecode": "VAE Decode",
    "SaveImage": "Save Image",
}


def lora_controlnet_img2img(
    image_id: str,
    *,
    checkpoint: str = "demo",
    lora: str = "tiny-lora.safetensors",
    controlnet: str = "tiny-controlnet",
    lora_strength: float = 0.8,
    control_strength: float = 1.0,
    denoise: float = 0.6,
    steps: int = 3,
) -> dict[str, Any]:
    """An uploaded image scaled to 64x64, encoded and re-sampled with a LoRA, guided by a
    ControlNet that reads the same image."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "2": {
            "class_type": "LoraLoader",
            "inputs": {
                "model": ["1", 0],
                "clip": ["1", 1],
                "lora_name": lora,
                "strength_model": lora_strength,
                "strength_clip": lora_strength,
            },
        },
        "3": {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": "a photo of the cat", "clip": ["2", 1]},
        },
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["2", 1]}},
        "5": {"class_type": "LoadImage", "inputs": {"image": image_id}},
        "6": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": controlnet}},
        "7": {
            "class_type": "ControlNetApplyAdvanced",
            "inputs": {
                "positive": ["3", 0],
                "negative": ["4", 0],
                "control_net": ["6", 0],
                "image": ["5", 0],
                "strength": control_strength,
                "start_percent": 0.0,
                "end_percent": 1.0,
            },
        },
        "8": {
            "class_type": "ImageScale",
            "inputs": {
                "image": ["5", 0],
                "upscale_method": "bilinear",
                "width": 64,
                "height": 64,
                "crop": "disabled",
            },
        },
        "9": {"class_type": "VAEEncode", "inputs": {"pixels": ["8", 0], "vae": ["1", 2]}},
        "10": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["2", 0],
                "seed": 7,
                "steps": steps,
                "cfg": 7.0,
                "sampler_name": "dpmpp_2m",
                "scheduler": "karras",
                "positive": ["7", 0],
                "negative": ["7", 1],
                "latent_image": ["9", 0],
                "denoise": denoise,
            },
        },
        "11": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["1", 2]}},
        "12": {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": "x"}},
    }
