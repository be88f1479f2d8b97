"""The AUTOMATIC1111 web UI API on the fleet: POST /sdapi/v1/txt2img and /sdapi/v1/img2img.

Each request becomes fleet jobs (n_iter jobs of batch_size images), waited for and answered as
the web UI answers: base64 images, the request as `parameters`, and an `info` JSON string.
Unknown fields are ignored, as the web UI's own models ignore them; fields that would ask for
something this fleet does not do (hires fix, scripts, styles, tiling) are refused with 422
rather than silently dropped. docs/compat.md has the full table.
"""

from __future__ import annotations

import io
import secrets
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)
from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from imagefleet.compat import fleet
from imagefleet.compat.a1111_mapping import (
    info_json,
    model_name,
    round_side,
    sampler_for,
    split_loras,
)
from imagefleet.config import Settings
from imagefleet.errors import InvalidField
from imagefleet.images import InvalidImage, inspect_image
from imagefleet.kinds.img2img import Img2ImgJob, Img2ImgParams
from imagefleet.kinds.inpaint import InpaintJob, InpaintParams
from imagefleet.kinds.txt2img import Txt2ImgJob, Txt2ImgParams
from imagefleet.orchestrator.auth import check_key
from imagefleet.orchestrator.deps import AppSettings
from imagefleet.orchestrator.openapi_errors import DESCRIPTIONS, DocumentedRoute, ErrorBody
from imagefleet.protocol import MAX_SEED, Strict
from imagefleet.store.keys import ApiKey

_basic = HTTPBasic(
    auto_error=False, description="The web UI's --api-auth: any user name, the API key as password."
)
_bearer = HTTPBearer(auto_error=False, description="An imagefleet API key.")


async def a1111_key(
    request: Request,
    bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
    basic: HTTPBasicCredentials | None = Depends(_basic),
) -> ApiKey:
    """A client key from `Authorization: Bearer <key>` or HTTP Basic with the key as password."""
    token = bearer.credentials if bearer else (basic.password if basic else None)
    return await check_key(request, token, "client")


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    extra = {
        502: "The job failed or was cancelled; `detail` says why",
        504: "The job did not finish in time; it goes on (Location names it)",
    }
    return {
        status: {"description": DESCRIPTIONS.get(status) or extra[status], "model": ErrorBody}
        for status in statuses
    }


READ_ERRORS = responses(401, 403, 429, 503)
RUN_ERRORS = responses(400, 401, 403, 404, 413, 422, 429, 502, 503, 504)
router = APIRouter(prefix="/sdapi/v1", tags=["automatic1111"], route_class=DocumentedRoute)


class Lenient(Strict):
    """The web UI's request models ignore fields they do not know; so do these."""

    model_config = ConfigDict(extra="ignore")


class OverrideSettings(Lenient):
    sd_model_checkpoint: str | None = Field(None, max_length=300)


class GenerationRequest(Lenient):
    prompt: str = Field("", max_length=8000)
    negative_prompt: str = Field("", max_length=4000)
    seed: int = Field(-1, ge=-1, le=MAX_SEED)
    sampler_name: str | None = Field(None, max_length=100)
    sampler_index: str | None = Field(None, max_length=100, description="Deprecated alias.")
    scheduler: str | None = Field(None, max_length=100)
    batch_size: int = Field(1, ge=1, le=8)
    n_iter: int = Field(1, ge=1, le=16)
    steps: int = Field(50, ge=1, le=150)
    cfg_scale: float = Field(7.0, ge=0.0, le=50.0)
    width: int = Field(512, ge=8, le=16384)
    height: int = Field(512, ge=8, le=16384)
    restore_faces: bool | None = Field(None, description="Accepted, ignored.")
    tiling: bool | None = Field(None, description="Refused when true.")
    enable_hr: bool = Field(False, description="Hires fix: refused when true.")
    subseed_strength: float = Field(0.0, ge=0.0, le=1.0, description="Refused above 0.")
    styles: list[str] | None = Field(None, max_length=32, description="Refused when not empty.")
    script_name: str | None = Field(None, max_length=200, description="Refused when set.")
    alwayson_scripts: dict[str, Any] | None = Field(None, description="Refused when not empty.")
    override_settings: OverrideSettings | None = None
    send_images: bool = True

    @field_validator("alwayson_scripts")
    @classmethod
    def _bounded(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value and len(value) > 32:
            raise ValueError("at most 32 scripts")
        return value


class Txt2ImgRequest(GenerationRequest):
    pass


class Img2ImgRequest(GenerationRequest):
    init_images: list[str] = Field(min_length=1, max_length=8)
    mask: str | None = None
    mask_blur: int = Field(4, ge=0, le=64)
    inpainting_mask_invert: int = Field(0, ge=0, le=1)
    denoising_strength: float = Field(0.75, gt=0.0, le=1.0)


class GenerationResponse(BaseModel):
    images: list[str] = Field(description="Base64-encoded PNG images.")
    parameters: dict[str, Any]
    info: str = Field(description="A JSON string: seeds, prompt, sampler, model.")


def refuse_unsupported(body: GenerationRequest) -> None:
    """Options that would change the image in ways this fleet cannot: refused, not dropped."""
    asks = {
        "enable_hr": body.enable_hr,
        "tiling": bool(body.tiling),
        "subseed_strength": body.subseed_strength > 0,
        "styles": bool(body.styles),
        "script_name": bool(body.script_name),
        "alwayson_scripts": bool(body.alwayson_scripts),
    }
    for field, asked in asks.items():
        if asked:
            raise InvalidField(
                ("body", field), f"{field} is not supported by this server (see docs/compat.md)"
            )


def checkpoint(body: GenerationRequest, settings: Settings) -> str:
    title = body.override_settings.sd_model_checkpoint if body.override_settings else None
    if title:
        return model_name(title)
    if settings.compat_default_model:
        return settings.compat_default_model
    raise InvalidField(
        ("body", "override_settings", "sd_model_checkpoint"),
        "name a registered checkpoint in override_settings.sd_model_checkpoint, or set "
        "IMAGEFLEET_COMPAT_DEFAULT_MODEL",
    )


def base_params(body: GenerationRequest, settings: Settings) -> dict[str, Any]:
    """The params every iteration's job shares (pure)."""
    refuse_unsupported(body)
    split = split_loras(body.prompt)
    if not split.prompt:
        raise InvalidField(("body", "prompt"), "the prompt is empty")
    params: dict[str, Any] = {
        "prompt": split.prompt,
        "model": checkpoint(body, settings),
        "loras": split.loras,
        "steps": body.steps,
        "guidance_scale": body.cfg_scale,
        "num_images": body.batch_size,
        "scheduler": sampler_for(
            body.sampler_name or body.sampler_index, body.scheduler, ("body",)
        ),
        "width": round_side(body.width),
        "height": round_side(body.height),
    }
    if body.negative_prompt:
        params["negative_prompt"] = body.negative_prompt
    return params


def iteration_seeds(body: GenerationRequest) -> list[int]:
    """The seed of each iteration's job: the web UI numbers images seed, seed+1, ... across
    batches, so iteration k starts at seed + k * batch_size."""
    total = body.batch_size * body.n_iter
    first = body.seed if body.seed >= 0 else secrets.randbelow(MAX_SEED + 2 - total)
    if first + total - 1 > MAX_SEED:
        raise InvalidField(("body", "seed"), f"seed + images must stay within {MAX_SEED}")
    return [first + k * body.batch_size for k in range(body.n_iter)]


def validated(model: type[Any], params: dict[str, Any]) -> Any:
    """A kind's params model from mapped params; a mapped value it refuses is a 422."""
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidField(("body", *map(str, first["loc"])), first["msg"]) from exc


async def _answer(
    request: Request, key: ApiKey, body: GenerationRequest, jobs: list[Any]
) -> GenerationResponse:
    rows = await fleet.submit_all(request, key, jobs)
    done = await fleet.wait_all(request, key, rows)
    images = [fleet.encode_base64(file) for job in done for file in job.files]
    seeds = [output.seed or 0 for job in done for output in job.view.outputs]
    combo = done[0].view.models
    model = combo[0] if combo else None
    parameters = body.model_dump(mode="json")
    info = info_json(
        {**parameters, "sampler_name": body.sampler_name or body.sampler_index},
        seeds,
        model.name if model else "",
        model.sha256 if model else "",
    )
    return GenerationResponse(
        images=images if body.send_images else [], parameters=parameters, info=info
    )


@router.post(
    "/txt2img",
    response_model=GenerationResponse,
    summary="AUTOMATIC1111-compatible txt2img (runs n_iter txt2img jobs)",
    responses=RUN_ERRORS,
)
async def txt2img(
    request: Request,
    settings: AppSettings,
    body: Txt2ImgRequest,
    key: ApiKey = Depends(a1111_key),
) -> GenerationResponse:
    params = base_params(body, settings)
    jobs = [
        Txt2ImgJob(params=validated(Txt2ImgParams, {**params, "seed": seed}))
        for seed in iteration_seeds(body)
    ]
    return await _answer(request, key, body, jobs)


@router.post(
    "/img2img",
    response_model=GenerationResponse,
    summary="AUTOMATIC1111-compatible img2img, or inpaint with a mask",
    responses=RUN_ERRORS,
)
async def img2img(
    request: Request,
    settings: AppSettings,
    body: Img2ImgRequest,
    key: ApiKey = Depends(a1111_key),
) -> GenerationResponse:
    params = base_params(body, settings)
    init = fleet.decode_base64_image(body.init_images[0], ("body", "init_images", 0))
    init_id, width, height = await fleet.store_image(request, key, init, ("body", "init_images", 0))
    params.update(init_image=init_id, strength=body.denoising_strength)
    seeds = iteration_seeds(body)
    if body.mask is None:
        jobs: list[Any] = [
            Img2ImgJob(params=validated(Img2ImgParams, {**params, "seed": seed})) for seed in seeds
        ]
        return await _answer(request, key, body, jobs)
    raw = fleet.decode_base64_image(body.mask, ("body", "mask"))
    mask = grey_mask(
        raw,
        (width, height),
        invert=bool(body.inpainting_mask_invert),
        max_pixels=settings.max_input_pixels,
    )
    mask_id, _, _ = await fleet.store_image(request, key, mask, ("body", "mask"))
    params.update(mask=mask_id, mask_blur=body.mask_blur)
    jobs = [InpaintJob(params=validated(InpaintParams, {**params, "seed": s})) for s in seeds]
    return await _answer(request, key, body, jobs)


def grey_mask(data: bytes, size: tuple[int, int], *, invert: bool, max_pixels: int) -> bytes:
    """The web UI's mask (white: repaint), as a grey-scale PNG of the init image's size (the
    web UI resizes a mask of another size; so does this). Checked like any upload first."""
    try:
        inspect_image(data, max_pixels=max_pixels)
    except InvalidImage as exc:
        raise InvalidField(("body", "mask"), str(exc)) from exc
    try:
        with Image.open(io.BytesIO(data)) as image:
            mask = image.convert("L")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidField(("body", "mask"), f"not a decodable image ({exc})") from exc
    if mask.size != size:
        mask = mask.resize(size)
    if invert:
        mask = ImageOps.invert(mask)
    out = io.BytesIO()
    mask.save(out, format="PNG")
    return out.getvalue()
