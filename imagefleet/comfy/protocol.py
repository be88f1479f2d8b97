"""Wire models of the ComfyUI-compatible endpoints (orchestrator/routes_comfy.py), shaped as
ComfyUI's own server answers, so that existing ComfyUI clients read them unchanged."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ComfyPrompt(BaseModel):
    """`POST /prompt`'s body. Unknown members (ComfyUI adds some over versions) are ignored."""

    model_config = ConfigDict(extra="ignore")

    prompt: dict[str, Any] = Field(description="The API-format graph.")
    client_id: str | None = Field(None, max_length=200)
    extra_data: dict[str, Any] | None = None
    front: bool | None = None
    number: int | None = None


class PromptAccepted(BaseModel):
    prompt_id: str
    number: int
    node_errors: dict[str, Any] = Field(default_factory=dict)


class PromptError(BaseModel):
    type: str
    message: str
    details: str = ""
    extra_info: dict[str, Any] = Field(default_factory=dict)


class PromptRejected(BaseModel):
    """ComfyUI's 400 for a prompt that cannot run: the reason, and per node its errors."""

    error: PromptError
    node_errors: dict[str, Any] = Field(default_factory=dict)


class UploadedImage(BaseModel):
    """`POST /upload/image`'s answer: `name` is what LoadImage's `image` input takes."""

    name: str
    subfolder: str = ""
    type: str = "input"
