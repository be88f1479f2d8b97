"""Tiny random-weight models of every kind the worker loads, for tests, benchmarks and demos.

No weights can be downloaded on test machines, yet the model manager must be tested on the real
loaders: diffusers pipelines (SD 1.5- and SDXL-shaped, with an SDXL refiner), LoRAs in the
diffusers/peft and kohya layouts, textual-inversion embeddings, standalone VAEs and ControlNets,
each as a diffusers folder and as the single files community hubs publish. Every builder is
deterministic for its seed and writes safetensors only. The SD 1.5-shaped adapters are built
against ``imagefleet.demo_model`` and read its configs, so they fit it whatever its VAE depth.

Modules: ``sdxl`` (base and refiner), ``lora``, ``embedding``, ``vae``, ``controlnet``, ``zoo``
(everything at once into one folder), and ``full_size`` (the SD 1.5 and SDXL architectures at
their published sizes, random weights, for GPU benchmarks). Heavy libraries load only when a
builder runs.
"""
