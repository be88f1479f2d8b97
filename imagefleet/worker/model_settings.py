"""The worker's model-manager settings: caches, budgets, credentials and what may be loaded.

One object read from ``IMAGEFLEET_WORKER_*`` environment variables, so an operator configures a
worker the same way on a laptop, in a container and on a community-cloud node. Credentials are
``SecretStr``: they never appear in a repr, a log line or an error message. Importing this module
costs no torch.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

GIB = 1 << 30


class ModelSettings(BaseSettings):
    """Every field can be set as ``IMAGEFLEET_WORKER_<FIELD>`` (upper case); see docs/models.md."""

    model_config = SettingsConfigDict(env_prefix="IMAGEFLEET_WORKER_", extra="ignore")

    cache_bytes: int = Field(
        0,
        ge=0,
        description="Disk cache budget in bytes; least recently used models are evicted beyond "
        "it (never one in use). 0: no budget, only the disk's free space limits it.",
    )
    cache_min_free_bytes: int = Field(
        1 * GIB,
        ge=0,
        description="Free disk space always left on the cache's filesystem.",
    )
    vram_cache_bytes: int = Field(
        0,
        ge=0,
        description="Device memory for resident pipelines and components (RAM on CPU); least "
        "recently used ones are unloaded beyond it. 0: 85% of the GPU's memory, or half the "
        "machine's RAM on CPU.",
    )
    max_parked_loras: int = Field(
        8,
        ge=0,
        description="LoRAs kept loaded but inactive on a resident pipeline after their job, so "
        "that the next job using one switches in milliseconds; 0 unloads every LoRA after use.",
    )
    allow_pickle: bool = Field(
        False,
        description="Accept pickle model files (.ckpt, .pt, .pth, .bin). They are then opened "
        "only with torch.load(weights_only=True) and converted to safetensors in the cache.",
    )
    allow_private_urls: bool = Field(
        False, description="Allow model URLs that resolve to private or loopback addresses."
    )
    http_auth: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='Authorization header value per host, as JSON: {"civitai.com": "Bearer '
        '..."}; sent only to that exact host, never across a redirect to another.',
    )
    hf_token: SecretStr | None = Field(
        None, description="Hugging Face token for gated or private hf: repositories."
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3 API URL for s3:// model sources; unset means AWS S3."
    )
    s3_region: str = Field("us-east-1", description="Region of the s3:// model bucket.")
    s3_access_key_id: str | None = Field(None, description="Key for s3:// model sources.")
    s3_secret_access_key: SecretStr | None = Field(
        None, description="Secret for s3:// model sources; unset keys use the AWS chain."
    )
    prompt_rewriter: str = Field(
        "",
        description="A pre-processing plug-in, module.path:ClassName with rewrite(prompt), "
        "applied to every generation job's prompts (e.g. a translator); see worker/plugins.py.",
    )
    safety_filter: str = Field(
        "",
        description="A post-processing plug-in, module.path:ClassName with is_unsafe(image), "
        "run on the images of jobs that ask for it; see worker/plugins.py.",
    )
    sdxl_vae_fp32: bool = Field(
        True,
        description="On GPUs, keep SDXL VAEs in float32 so that decoding cannot overflow in "
        "float16 (costs VRAM; register an fp16-fixed VAE and set this off to save it).",
    )
