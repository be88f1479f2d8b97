"""How client commands reach the orchestrator, and what they say when that goes wrong.

Every failure a user can cause or meet (nothing listening at the URL, a wrong key, a value the
API refuses, a job that outlives the wait) becomes one line that says what happened and what
to do next, in the CLI's own words: flags (`--width`), not API field paths
(`body.params.width`); commands (`imagefleet models list`), not HTTP routes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import typer

from imagefleet.cli.common import CLIENT_KEY_FILE, URL_ENV_VAR, fail
from imagefleet.cli.datadir import choose_data_dir
from imagefleet.client import ApiError, ImageFleetClient, JobStillRunning

KEY_ENV_VAR = "IMAGEFLEET_KEY"
UNREACHABLE_CODE = 2
START_HINT = "start one with `imagefleet up` (or `scripts/up` in a clone of imagefleet)"

KeyOption = typer.Option(
    None,
    "--key",
    envvar=KEY_ENV_VAR,
    help=f"Client API key. Default: ${KEY_ENV_VAR}, else the key `imagefleet up` stored in the "
    "data directory.",
)

# The CLI flag that sets each txt2img parameter, for error messages.
PARAM_FLAGS = {
    "prompt": "the prompt",
    "negative_prompt": "--negative",
    "model": "--model",
    "width": "--width",
    "height": "--height",
    "steps": "--steps",
    "guidance_scale": "--guidance",
    "seed": "--seed",
    "num_images": "--num-images",
    "scheduler": "--scheduler",
}
# API routes that error messages point to, and the command that shows the same thing.
ROUTE_COMMANDS = {
    "GET /v1/models": "`imagefleet models list`",
    "GET /v1/jobs": "`imagefleet jobs list`",
}


def resolve_key(key: str | None, data_dir: Path | None) -> str:
    """The client key: the flag or variable, else the one `imagefleet up` stored."""
    if key:
        return key
    stored = choose_data_dir(data_dir).path / CLIENT_KEY_FILE
    if stored.is_file():
        return stored.read_text().strip()
    raise fail(
        f"no API key: pass --key or set ${KEY_ENV_VAR} (`imagefleet keys create --name NAME` "
        f"makes one), or run this where `imagefleet up` keeps its data directory (no "
        f"{stored} here)"
    )


@contextmanager
def talking_to(url: str) -> Iterator[None]:
    """Turns the errors of talking to the orchestrator into one-line exits."""
    try:
        yield
    except ApiError as exc:
        raise fail(explain(exc, url)) from exc
    except JobStillRunning as exc:
        job = exc.job
        raise fail(
            f"job {job.id} still {job.status.value} after {exc.waited:.0f} s "
            f"(step {job.progress.step}/{job.progress.total_steps or job.params.get('steps', 1)}); "
            "it goes "
            f"on in the fleet: check with `imagefleet jobs get {job.id}`, fetch the images "
            f"with `imagefleet jobs download {job.id} -o out/`"
        ) from exc
    except httpx.UnsupportedProtocol as exc:
        raise fail(f"--url must start with http:// or https://, got {url!r}") from exc
    except httpx.InvalidURL as exc:
        raise fail(f"--url is not a valid URL ({exc}): {url!r}") from exc
    except httpx.ConnectError as exc:
        raise fail(
            f"cannot reach the orchestrator at {url} ({_reason(exc)}): is it running? "
            f"{START_HINT.capitalize()}, or pass --url / set ${URL_ENV_VAR}",
            code=UNREACHABLE_CODE,
        ) from exc
    except httpx.TimeoutException as exc:
        raise fail(
            f"the orchestrator at {url} did not answer in time ({_reason(exc)}); it may be "
            "overloaded or stuck: try again, or look at its log",
            code=UNREACHABLE_CODE,
        ) from exc
    except httpx.HTTPError as exc:
        raise fail(
            f"lost the connection to the orchestrator at {url} ({_reason(exc)}); try again",
            code=UNREACHABLE_CODE,
        ) from exc


def connect(url: str, key: str | None, data_dir: Path | None) -> ImageFleetClient:
    return ImageFleetClient(url, resolve_key(key, data_dir))


def explain(exc: ApiError, url: str) -> str:
    """One line for an error answer, in the CLI's words."""
    detail = exc.detail
    if exc.status == 422 and isinstance(detail, list):
        return "; ".join(_field_error(item) for item in detail if isinstance(item, dict))
    text = _commands_for_routes(str(detail))
    if exc.status == 401:
        return (
            f"the orchestrator at {url} refused the key ({text}); pass a client key with --key "
            f"or ${KEY_ENV_VAR} (`imagefleet keys create --name NAME` makes one)"
        )
    if exc.status == 403:
        return f"{text}; use a client key (`imagefleet keys list` shows each key's scope)"
    if exc.status in (404, 409, 413, 429):
        return text
    if exc.status >= 500:
        return f"the orchestrator at {url} failed (HTTP {exc.status}): {text}"
    return f"the orchestrator refused the request (HTTP {exc.status}): {text}"


def _field_error(item: dict[str, Any]) -> str:
    loc = [str(part) for part in item.get("loc", [])]
    message = str(item.get("msg", "invalid value")).removeprefix("Value error, ")
    if loc[:2] == ["body", "params"] and len(loc) > 2:
        name = PARAM_FLAGS.get(loc[2], loc[2])
    elif loc and loc[0] in ("body", "query", "path"):
        name = ".".join(loc[1:]) or loc[0]
    else:
        name = ".".join(loc) or "request"
    return f"{name}: {_commands_for_routes(message)}"


def _commands_for_routes(text: str) -> str:
    for route, command in ROUTE_COMMANDS.items():
        text = text.replace(route, command)
    return text


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__
