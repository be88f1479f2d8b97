"""The OpenAI Images API on the fleet: POST /v1/images/generations (txt2img) and
POST /v1/images/edits (image + mask -> inpaint), with OpenAI's error shape.

Requests become ordinary fleet jobs that the endpoint waits for. What maps to what, and what is
ignored, is in docs/compat.md; the mapping itself is `generation_params` (pure)."""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.exc import OperationalError

from imagefleet.artifacts.base import ArtifactStoreError
from imagefleet.compat import fleet
from imagefleet.config import Settings
from imagefleet.errors import ApiError, InvalidField
from imagefleet.kinds.inpaint import InpaintJob, InpaintParams
from imagefleet.kinds.txt2img import Txt2ImgJob, Txt2ImgParams
from imagefleet.orchestrator.deps import AppSettings, ClientKey
from imagefleet.orchestrator.openapi_errors import DocumentedRoute
from imagefleet.protocol import MAX_SEED, Strict
from imagefleet.store.database import DatabaseUnavailable

# OpenAI's `quality` as denoising steps; `standard`/`medium`/`auto` keep the server's default.
STEPS_BY_QUALITY = {"low": 15, "standard": 30, "auto": 30, "medium": 30, "hd": 50, "high": 50}
AUTO_SIDE = 512
MAX_IMAGES = 8
OPENAI_MODELS = ("dall-e", "gpt-image")
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    429: "rate_limit_exceeded",
    502: "server_error",
    503: "server_error",
    504: "timeout",
}


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorBody(BaseModel):
    """OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`."""

    error: OpenAIErrorDetail


class ImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]


class ImageGenerationRequest(Strict):
    """OpenAI's generation body; unknown fields are refused (400), as OpenAI does.
    `negative_prompt`, `steps` and `seed` are imagefleet extensions (send them with the openai
    client's `extra_body`)."""

    prompt: str = Field(min_length=1, max_length=4000)
    model: str | None = Field(None, max_length=200, description="A registered checkpoint.")
    n: int = Field(1, ge=1, le=10)
    size: str | None = Field(None, max_length=20, description='"WIDTHxHEIGHT" or "auto".')
    response_format: Literal["url", "b64_json"] = "url"
    quality: Literal["standard", "hd", "low", "medium", "high", "auto"] | None = None
    style: Literal["vivid", "natural"] | None = Field(None, description="Accepted, ignored.")
    user: str | None = Field(None, max_length=200, description="Accepted, ignored.")
    output_format: Literal["png"] | None = None
    negative_prompt: str | None = Field(None, max_length=4000)
    steps: int | None = Field(None, ge=1, le=150)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)


def openai_error(
    status: int,
    message: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = OpenAIErrorBody(
        error=OpenAIErrorDetail(
            message=message,
            type=ERROR_TYPES.get(status, "invalid_request_error"),
            param=param,
            code=code,
        )
    )
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _param(loc: Any) -> str | None:
    parts = [str(part) for part in (loc or [])[1:] if part not in ("params",)]
    return ".".join(parts) or None


def _from_api_error(exc: ApiError) -> JSONResponse:
    status = 400 if exc.status == 422 else exc.status
    param = _param(exc.loc) if isinstance(exc, InvalidField) else None
    code = {404: "model_not_found", 504: "timeout", 429: "rate_limit_exceeded"}.get(status)
    return openai_error(status, exc.message, param, code, exc.headers)


def _from_validation(exc: RequestValidationError | ValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {"msg": "invalid request", "loc": ()}
    loc = first.get("loc") or ()
    param = _param(loc) if isinstance(exc, RequestValidationError) else ".".join(map(str, loc))
    if first.get("type") == "extra_forbidden":
        return openai_error(400, f"Unrecognized request argument supplied: {param}", param)
    return openai_error(400, f"{param or 'body'}: {first.get('msg')}", param, "invalid_value")


class OpenAIRoute(DocumentedRoute):
    """Answers every error in OpenAI's shape (the openai client reads `error.message`)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        inner = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await inner(request)
            except (RequestValidationError, ValidationError) as exc:
                return _from_validation(exc)
            except ApiError as exc:
                return _from_api_error(exc)
            except (DatabaseUnavailable, OperationalError, ArtifactStoreError):
                return openai_error(
                    503, "the service is unavailable; retry shortly", headers={"Retry-After": "2"}
                )

        return handler


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": OpenAIErrorBody, "description": f"OpenAI-shaped error ({kind})"}
    for status, kind in ERROR_TYPES.items()
}
router = APIRouter(prefix="/v1/images", tags=["openai"], route_class=OpenAIRoute)


def checkpoint(model: str | None, settings: Settings) -> str:
    """The registered model a request runs: the one it names, or the configured default for
    requests naming none or an OpenAI model."""
    if model and not model.startswith(OPENAI_MODELS):
        return model
    if settings.compat_default_model:
        return settings.compat_default_model
    raise InvalidField(
        ("body", "model"),
        "name a registered checkpoint in `model`, or set IMAGEFLEET_COMPAT_DEFAULT_MODEL",
    )


def size_of(size: str | None) -> tuple[int, int]:
    if size in (None, "auto"):
        return AUTO_SIDE, AUTO_SIDE
    return fleet.parse_size(size, ("body", "size"))


def generation_params(body: ImageGenerationRequest, settings: Settings) -> dict[str, Any]:
    """The txt2img params an OpenAI generation request means (pure)."""
    if body.n > MAX_IMAGES:
        raise InvalidField(("body", "n"), f"n must be at most {MAX_IMAGES} here, got {body.n}")
    width, height = size_of(body.size)
    params: dict[str, Any] = {
        "prompt": body.prompt,
        "model": checkpoint(body.model, settings),
        "width": width,
        "height": height,
        "num_images": body.n,
    }
    if body.steps is not None:
        params["steps"] = body.steps
    elif body.quality is not None:
        params["steps"] = STEPS_BY_QUALITY[body.quality]
    if body.negative_prompt:
        params["negative_prompt"] = body.negative_prompt
    if body.seed is not None:
        params["seed"] = body.seed
    return params


async def _answer(request: Request, key: Any, job: Any, response_format: str) -> ImagesResponse:
    rows = await fleet.submit_all(request, key, [job])
    (done,) = await fleet.wait_all(request, key, rows)
    if response_format == "b64_json":
        data = [ImageData(b64_json=fleet.encode_base64(file)) for file in done.files]
    else:
        data = [ImageData(url=output.url) for output in done.view.outputs]
    return ImagesResponse(created=int(time.time()), data=data)


@router.post(
    "/generations",
    response_model=ImagesResponse,
    response_model_exclude_none=True,
    summary="OpenAI-compatible: create images from a prompt (runs a txt2img job)",
    responses=_ERRORS,
)
async def create_images(
    request: Request, key: ClientKey, settings: AppSettings, body: ImageGenerationRequest
) -> ImagesResponse:
    params = Txt2ImgParams.model_validate(generation_params(body, settings))
    return await _answer(request, key, Txt2ImgJob(params=params), body.response_format)


@router.post(
    "/edits",
    response_model=ImagesResponse,
    response_model_exclude_none=True,
    summary="OpenAI-compatible: edit an image where the mask is transparent (an inpaint job)",
    responses=_ERRORS,
)
async def edit_images(
    request: Request,
    key: ClientKey,
    settings: AppSettings,
    image: Annotated[UploadFile, File(description="PNG, JPEG or WebP.")],
    prompt: Annotated[str, Form(min_length=1, max_length=4000)],
    mask: Annotated[UploadFile | None, File(description="Transparent where to edit.")] = None,
    model: Annotated[str | None, Form(max_length=200)] = None,
    n: Annotated[int, Form(ge=1, le=10)] = 1,
    size: Annotated[str | None, Form(max_length=20)] = None,
    response_format: Annotated[Literal["url", "b64_json"], Form()] = "url",
    quality: Annotated[str | None, Form(max_length=20)] = None,
    user: Annotated[str | None, Form(max_length=200)] = None,
    steps: Annotated[int | None, Form(ge=1, le=150, description="imagefleet extension.")] = None,
) -> ImagesResponse:
    if n > MAX_IMAGES:
        raise InvalidField(("body", "n"), f"n must be at most {MAX_IMAGES} here, got {n}")
    image_bytes = await image.read()
    init_id, width, height = await fleet.store_image(request, key, image_bytes, ("body", "image"))
    if mask is not None:
        mask_source = await mask.read()
        fleet_mask = fleet.alpha_to_mask(mask_source) if mask_source else None
        if fleet_mask is None:
            raise InvalidField(("body", "mask"), "the mask has no transparent pixel to edit")
    else:
        fleet_mask = fleet.alpha_to_mask(image_bytes) or fleet.white_mask(width, height)
    mask_id, _, _ = await fleet.store_image(request, key, fleet_mask, ("body", "mask"))
    params: dict[str, Any] = {
        "prompt": prompt,
        "model": checkpoint(model, settings),
        "init_image": init_id,
        "mask": mask_id,
        "num_images": n,
    }
    if size not in (None, "auto"):
        params["width"], params["height"] = fleet.parse_size(size, ("body", "size"))
    if steps is not None:
        params["steps"] = steps
    elif quality in STEPS_BY_QUALITY:
        params["steps"] = STEPS_BY_QUALITY[quality]
    job = InpaintJob(params=InpaintParams.model_validate(params))
    return await _answer(request, key, job, response_format)
