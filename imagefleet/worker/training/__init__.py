"""The worker's LoRA training engine (torch, diffusers, peft).

`types` is torch-free so that the worker loop and its handler can name progress, stop reasons
and errors without importing torch; everything else here needs the worker extra.
"""
