"""Property-based fuzzing of every API operation, generated from the app's own OpenAPI document.

The hand-written API tests check the requests someone thought of. Here schemathesis (on top of
Hypothesis) reads /openapi.json and generates the rest: valid requests (positive mode) and
requests that break the documented schema (negative mode), each sent with the right key for the
operation's audience or a wrong one (none, garbage, revoked, another scope, another tenant), at
real ids (a live attempt, a finished job with an output, a quarantined node) so that the deep
code paths run, not only the 404s. Every response must:

1. never be a 5xx: whatever a caller sends, the server answers it (an unhandled exception is
   caught here and reported with the imagefleet frame it came from);
2. for a documented status, carry the documented content type, headers and body schema, and
   not accept a request that breaks the document (schemathesis' negative_data_rejection);
3. for a status the document does not declare, be listed in KNOWN_UNDOCUMENTED (so a new one
   is noticed) and still be the app's error shape, `{"detail": ...}`;
4. never be a 2xx for a caller without a valid key of the right scope, nor for another tenant
   naming ids it does not own;
5. for a submit the document calls valid and that names a registered model, be accepted.

Findings are collected for the whole run instead of stopping at the first, so one run reports
every distinct bug with its shortest example; then the test fails listing them.

Knobs (see docs/testing.md): IMAGEFLEET_FUZZ_EXAMPLES examples per operation and mode on SQLite
(default 40: about 1,200 requests, and the run asserts it sent at least 1,000),
IMAGEFLEET_FUZZ_PG_EXAMPLES on PostgreSQL (default an eighth of that: PostgreSQL is slower, and
its run is there mostly for the NUL bytes it refuses in text, which are injected on purpose and
counted), IMAGEFLEET_FUZZ_DIALECTS, IMAGEFLEET_FUZZ_SEED to replay one seed, and
IMAGEFLEET_FUZZ_REPORT=path.json to keep each dialect's statistics and findings.

The run is deterministic: it uses the fixed SEEDS below, never a fresh random one, so that CI
passes or fails on the code alone. Change SEEDS only in a deliberate commit. Open-ended
exploration with random seeds is `bench/fuzz_explore.py`, which runs this test with a new seed
per round and reports what it finds with the seed that replays it.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import os
import random
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, cast

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, seed
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
)
from schemathesis.errors import FailureGroup

from imagefleet.config import Settings
from imagefleet.orchestrator.app import create_app
from imagefleet.protocol import MAX_SEED
from imagefleet.store.database import Database
from imagefleet.store.keys import create_key, revoke_key
from imagefleet.store.models import Model
from tests.conftest import Keys

try:  # the HTTP client TestClient is built on: httpx2 from starlette 1.x on, httpx before
    import httpx2 as http_client
except ImportError:  # pragma: no cover
    import httpx as http_client  # type: ignore[no-redef]

DEFAULT_EXAMPLES = 40
EXAMPLES = int(os.environ.get("IMAGEFLEET_FUZZ_EXAMPLES") or DEFAULT_EXAMPLES)
PG_EXAMPLES = int(os.environ.get("IMAGEFLEET_FUZZ_PG_EXAMPLES") or max(1, EXAMPLES // 8))
DIALECTS = (os.environ.get("IMAGEFLEET_FUZZ_DIALECTS") or "sqlite,postgresql").split(",")
# The suite's seeds; the examples are shared out between them. The first is the seed of a
# CI run that found JSON booleans accepted as floats: kept as that bug's regression run.
SEEDS = (1723632224, 20260522)
RUN_SEEDS = (
    tuple(
        int(value) for value in (os.environ.get("IMAGEFLEET_FUZZ_SEED") or "").split(",") if value
    )
    or SEEDS
)
REPORT = os.environ.get("IMAGEFLEET_FUZZ_REPORT")
# The bar: 1,000 requests per run. A run sends about 30 per example setting (40
# operation x mode pairs, some with too few distinct inputs to reach the setting), so a
# smaller local run is held to a proportional floor instead.
REQUIRED_REQUESTS = 1000
# The default example settings were sized for 20 operations. As the API grows each operation
# gets its share of that budget, so the suite's fuzz time stays about the same (a knob set in
# the environment is taken as given). The request floor above still holds the run to 1,000.
BUDGET_OPERATIONS = 20
REQUESTS_PER_EXAMPLE_FLOOR = 25

# Checks run on every response. status_code_conformance is replaced by our own bookkeeping
# (KNOWN_UNDOCUMENTED) so that a known gap in the document does not hide other findings.
CHECKS = [
    not_a_server_error,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

SCHEMATHESIS_CONFIG = schemathesis.Config.from_dict(
    {
        # Keys are chosen per request (by role), not generated from the security scheme.
        "generation": {"with-security-parameters": False},
        # A body over the size limit is refused with 413 before it is parsed: a rejection too.
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [
                    *("400", "401", "403", "404", "405", "406", "409", "413", "415", "422"),
                    *("428", "429", "5XX"),
                ]
            }
        },
    }
)

COMPAT_PATHS = ("/v1/images/", "/sdapi/")

# (operation, status) pairs the app answers but the OpenAPI document does not declare. Empty:
# every route documents its statuses (orchestrator/openapi_errors.py). A pair that appears fails
# the run; list it here only while its `responses=` entry is being written.
KNOWN_UNDOCUMENTED: dict[str, set[int]] = {}

# A public address literal: the webhook check accepts it without DNS, and with run_duties=False
# nothing is ever sent to it. It fills the webhook delivery log.
WEBHOOK_URL = "https://1.1.1.1/imagefleet-fuzz"
# Headers every request carries; the report leaves them out (and never shows a key).
QUIET_HEADERS = {"authorization", "user-agent", "accept-encoding", "accept", "connection"}
# Strings valid in JSON that a store may refuse: NUL (PostgreSQL text) and a lone surrogate
# (not encodable as UTF-8, so no database can store it).
HOSTILE = ["\x00", "\ud800"]
BASE_URL = "http://testserver"


class Role(StrEnum):
    """Who sends a generated request, relative to the operation's audience."""

    owner = "owner"  # a key of the right scope that owns the real ids
    stranger = "stranger"  # right scope, another tenant
    wrong_scope = "wrong_scope"
    garbage = "garbage"  # malformed, unknown or revoked key
    anonymous = "anonymous"  # no Authorization header


# Most requests go out as the owner, so that the generated inputs reach the handlers.
ROLES = [Role.owner] * 6 + [Role.stranger, Role.wrong_scope, Role.garbage, Role.anonymous]


def audience(path: str) -> str:
    prefixes = (
        ("/v1/worker/", "worker"),
        ("/v1/admin/", "admin"),
        ("/v1/", "client"),
        ("/sdapi/", "client"),  # the A1111 API takes client keys as Bearer too
    )
    for prefix, name in prefixes:
        if path.startswith(prefix):
            return name
    return "public"


@dataclass
class Finding:
    """One distinct problem, with the shortest request seen that shows it."""

    kind: str
    operation: str
    detail: str
    example: str
    seed: int
    count: int = 1


@dataclass
class Stats:
    """What the run did: the claim "N requests, no 5xx" is checked from these numbers."""

    requests: int = 0
    hostile_requests: Counter[str] = field(default_factory=Counter)
    request_seconds: float = 0.0
    by_operation: Counter[str] = field(default_factory=Counter)
    seconds_by_operation: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    by_role: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    undocumented: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    findings: dict[tuple[str, str, str], Finding] = field(default_factory=dict)
    seed: int = 0  # the run seed being fuzzed now

    def found(self, kind: str, operation: str, detail: str, example: str) -> None:
        key = (kind, operation, detail)
        seen = self.findings.get(key)
        if seen is None:
            self.findings[key] = Finding(kind, operation, detail, example, self.seed)
            return
        seen.count += 1
        if len(example) < len(seen.example):
            seen.example, seen.seed = example, self.seed


@dataclass
class World:
    """The app under test, keys by audience and role, and a way to make real ids."""

    api: TestClient
    dialect: str
    tokens: dict[str, dict[Role, list[str]]]
    worker_token: str
    client_token: str
    rounds: int = 0

    def real_ids(self, stats: Stats) -> dict[str, Any]:
        """A finished job with output 0, a live attempt on a fresh node, a quarantined node.

        Made anew for every operation and mode that takes ids in its path: the fuzzer
        cancels, fails and completes what it is given, and each operation deserves a live
        attempt to start from. The finished
        job is submitted with the largest seed the document allows and completed with the
        seeds a worker reports (the job's seed + output index): a boundary the generator
        reaches only by luck, since completing needs the outputs uploaded first.
        """
        self.rounds += 1
        api, n = self.api, self.rounds
        client = {"Authorization": f"Bearer {self.client_token}"}
        worker = {"Authorization": f"Bearer {self.worker_token}"}

        def submit(**params: Any) -> None:
            body = {
                "kind": "txt2img",
                "params": {"prompt": "fuzz", "model": "demo", "width": 64, "height": 64, **params},
                "webhook": {"url": WEBHOOK_URL},
            }
            response = api.post("/v1/jobs", json=body, headers=client)
            assert response.status_code == 201, response.text

        def claim(node: str) -> dict[str, Any]:
            response = api.post(
                "/v1/worker/claim", json={"worker_id": "fuzz", "node_id": node}, headers=worker
            )
            assignment: dict[str, Any] = response.json()["assignment"]
            assert assignment, response.json()
            return assignment

        def claim_own(node: str) -> dict[str, Any]:
            """A claim of one of the owner's jobs. The job ranked first may be one the fuzzer
            queued as another tenant (a paid tier ranks first): those are failed for good on a
            throwaway node, so that the real ids always belong to the owner."""
            for attempt in range(100):
                assignment = claim(f"{node}-{attempt}" if attempt else node)
                if api.get(f"/v1/jobs/{assignment['job_id']}", headers=client).status_code == 200:
                    return assignment
                api.post(
                    f"/v1/worker/attempts/{assignment['attempt_id']}/fail",
                    json={"code": "worker_error", "retryable": False},
                    headers=worker,
                )
            raise AssertionError("the owner's job was never handed out")

        submit(seed=MAX_SEED)
        done = claim_own(f"fuzz-done-{n}")
        attempt = f"/v1/worker/attempts/{done['attempt_id']}"
        params = done["params"]
        for index in range(params["num_images"]):
            upload = api.put(
                f"{attempt}/outputs/{index}",
                content=b"\x89PNG fuzz",
                headers={**worker, "Content-Type": "image/png"},
            )
            assert upload.status_code == 200, upload.text
        outputs = [
            {"index": i, "seed": params["seed"] + i, "width": 64, "height": 64}
            for i in range(params["num_images"])
        ]
        try:
            completed = api.post(f"{attempt}/complete", json={"outputs": outputs}, headers=worker)
        except Exception as exc:
            label = "POST /v1/worker/attempts/{attempt_id}/complete"
            example = f"POST {attempt}/complete  [owner key, fixture]  body={json.dumps(outputs)}"
            stats.found(
                "server error",
                label,
                f"unhandled {type(exc).__name__} at {where(exc)}",
                f"{example}\n    {str(exc).splitlines()[0][:200]}",
            )
            # Recorded; finish the job with small seeds so that the run goes on.
            outputs = [{**output, "seed": output["index"]} for output in outputs]
            completed = api.post(f"{attempt}/complete", json={"outputs": outputs}, headers=worker)
        assert completed.status_code == 200, completed.text
        submit()
        bad_node = f"fuzz-bad-{n}"
        doomed = claim(bad_node)
        failed = api.post(
            f"/v1/worker/attempts/{doomed['attempt_id']}/fail",
            json={"code": "worker_error", "message": "quarantines its node"},
            headers=worker,
        )
        assert failed.status_code == 200, failed.text
        submit()
        live = claim_own(f"fuzz-live-{n}")
        return {
            "done_job_id": done["job_id"],
            "live_job_id": live["job_id"],
            "attempt_id": live["attempt_id"],
            "live_images": live["params"]["num_images"],
            "node_id": bad_node,
        }

    def steer_complete(self, case: schemathesis.Case, real: dict[str, Any]) -> None:
        """Makes a generated completion of the live attempt one that can succeed: its outputs
        uploaded first and numbered 0..n-1, keeping the generated seeds and sizes, so that
        those values reach the store (a completion otherwise stops at the index check)."""
        attempt = f"/v1/worker/attempts/{real['attempt_id']}"
        headers = {"Authorization": f"Bearer {self.worker_token}", "Content-Type": "image/png"}
        for index in range(real["live_images"]):
            # 409 once the attempt has completed: that is a case worth sending too.
            self.api.put(f"{attempt}/outputs/{index}", content=b"\x89PNG", headers=headers)
        body = cast("dict[str, Any]", case.body)
        generated = body["outputs"]
        body["outputs"] = [
            {**generated[i % len(generated)], "index": i} for i in range(real["live_images"])
        ]


@pytest.fixture
def world(settings: Settings, keys: Keys, model: Model, db: Database) -> Iterator[World]:
    """The app on a store with the conftest keys, plus the extra keys the roles need."""
    with db.write() as conn:
        _, other_worker = create_key(conn, name="ow", scope="worker", tier="free", now=1.0)
        _, other_admin = create_key(conn, name="oa", scope="admin", tier="free", now=1.0)
        revoked = {}
        for scope in ("client", "worker", "admin"):
            _, token = create_key(conn, name=f"r{scope}", scope=scope, tier="free", now=1.0)
            revoke_key(conn, token.split("_")[1], 2.0)
            revoked[scope] = token
    fuzz_settings = settings.model_copy(
        update={
            # Claims long-poll up to this: generated wait_seconds would otherwise stall the run.
            "claim_wait_max_seconds": 0.01,
            # One failure quarantines a node: a cheap quarantined node for the release endpoint.
            "quarantine_failures": 1,
            # Streams send what is recorded and close; compatibility endpoints answer 504 at
            # once (no worker runs here): neither may hold a generated request open.
            "events_stream_max_seconds": 0.0,
            "compat_wait_seconds": 0.0,
            "compat_default_model": "demo",
        }
    )
    garbage = ["if_0000_garbage", "nonsense", "if__", ""]
    tokens: dict[str, dict[Role, list[str]]] = {
        "client": {
            Role.owner: [keys.alice_token],
            Role.stranger: [keys.bob_token],
            Role.wrong_scope: [keys.worker_token],
            Role.garbage: [*garbage, revoked["client"], keys.alice_token + "x"],
        },
        "worker": {
            Role.owner: [keys.worker_token],
            Role.stranger: [other_worker],
            Role.wrong_scope: [keys.alice_token, keys.admin_token],
            Role.garbage: [*garbage, revoked["worker"]],
        },
        "admin": {
            # Admin endpoints have no tenants: another admin key is just another owner.
            Role.owner: [keys.admin_token],
            Role.stranger: [other_admin],
            Role.wrong_scope: [keys.alice_token, keys.worker_token],
            Role.garbage: [*garbage, revoked["admin"]],
        },
    }
    dialect = "sqlite" if db.is_sqlite else "postgresql"
    with TestClient(create_app(fuzz_settings, run_duties=False)) as api:
        yield World(api, dialect, tokens, keys.worker_token, keys.alice_token)


def string_leaves(value: Any) -> list[tuple[Any, Any]]:
    """(container, key) for every string inside a JSON-like value, depth first."""
    found: list[tuple[Any, Any]] = []
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        if isinstance(item, str):
            found.append((value, key))
        elif isinstance(item, dict | list):
            found.extend(string_leaves(item))
    return found


def inject_hostile(case: schemathesis.Case, request: dict[str, Any], data: st.DataObject) -> str:
    """Puts a NUL or a lone surrogate into one string of the request about to be sent (path,
    query or JSON body) and says which. Hypothesis rarely puts either into the field that
    matters, yet PostgreSQL refuses NUL in text and no database stores a lone surrogate: every
    string a handler stores or looks up must be tried with both.

    Query and body are changed in `request` (copies), not in the case: schemathesis revalidates
    an edited case, and its validator cannot read a lone surrogate."""
    request["params"] = copy.deepcopy(request.get("params") or {})
    if "json" in request:
        request["json"] = copy.deepcopy(request["json"])
    leaves = [
        ("path", case.path_parameters, key)
        for key, value in (case.path_parameters or {}).items()
        if isinstance(value, str)
    ]
    leaves += [("query", c, k) for c, k in string_leaves(request["params"])]
    if isinstance(request.get("json"), dict | list):
        leaves += [("body", c, k) for c, k in string_leaves(request["json"])]
    if not leaves:
        return ""
    place, container, key = data.draw(st.sampled_from(leaves), label="hostile_target")
    value: str = container[key]
    if place == "path":
        # Generated path values are percent-encoded already: add an escape, keep theirs whole.
        # (A URL carries UTF-8, so a lone surrogate cannot travel in one.)
        container[key] = data.draw(st.sampled_from([f"%00{value}", f"{value}%00"]), label="at")
        request["url"] = case.as_transport_kwargs(base_url=BASE_URL)["url"]
        return "\x00"
    bad = "\x00" if place == "query" else data.draw(st.sampled_from(HOSTILE), label="bad")
    at = data.draw(st.integers(0, len(value)), label="hostile_at")
    container[key] = value[:at] + bad + value[at:]
    return bad


def unstorable(value: Any) -> bool:
    """Whether a JSON-like value holds text no store can keep (NUL, a lone surrogate): the
    server may refuse it with 422 although the document's `string` allows it."""
    if isinstance(value, str):
        return "\x00" in value or any("\ud800" <= char <= "\udfff" for char in value)
    if isinstance(value, dict):
        return any(unstorable(item) for item in value.values())
    if isinstance(value, list):
        return any(unstorable(item) for item in value)
    return False


def steer_submit(case: schemathesis.Case, data: st.DataObject) -> bool:
    """Steers a generated submit past what the document cannot express (a registered model,
    sides that are multiples of 8 within this server's bounds, a webhook host that resolves to
    a public address) so that submits queue jobs that reach claim, heartbeat, upload and
    complete. Everything else stays as generated: the body is still one the document calls
    valid, so the server must accept it. Only txt2img is steered: the other kinds name inputs
    that would have to be uploaded first, so their generated ids are (rightly) 404s. The
    combo is reduced to the one registered model (no LoRAs, VAE or embeddings exist here)."""
    if not isinstance(case.body, dict) or not isinstance(case.body.get("params"), dict):
        return False
    body = cast("dict[str, Any]", case.body)
    if body.get("kind") != "txt2img":
        return False
    params = body["params"]
    params["model"] = "demo"
    for combo_field in ("loras", "vae", "embeddings"):
        params.pop(combo_field, None)
    params["width"] = data.draw(st.sampled_from([64, 128, 256]), label="width")
    params["height"] = data.draw(st.sampled_from([64, 128, 256]), label="height")
    if isinstance(body.get("webhook"), dict):
        body["webhook"]["url"] = WEBHOOK_URL
    return True


def steer_cursor(case: schemathesis.Case, data: st.DataObject) -> None:
    """Replaces a generated cursor with a well-formed one holding any float and any text: the
    generator never finds the base64 form by chance, and the decoded job id reaches SQL."""
    created = data.draw(st.floats(allow_nan=True, allow_infinity=True), label="created")
    job_id = data.draw(st.text(max_size=40) | st.sampled_from(["\x00", "a\x00b"]), label="job_id")
    raw = f"{created!r}|{job_id}".encode()
    case.query = {**(case.query or {}), "cursor": base64.urlsafe_b64encode(raw).decode()}


def describe(method: str, url: str, role: Role, headers: dict[str, str], body: Any) -> str:
    """A request as the report shows it: keys by role, never by secret."""
    shown = {k: v for k, v in headers.items() if k.lower() not in QUIET_HEADERS}
    shown_body = body if isinstance(body, str | bytes) else json.dumps(body)
    cut = "..." if len(shown_body) > 400 else ""
    return f"{method} {url}  [{role.value} key]  headers={shown}  body={shown_body[:400]!r}{cut}"


def where(exc: BaseException) -> str:
    """Where an unhandled exception was raised, and the innermost imagefleet frame on its way
    (the frame to fix when the raise is in a library)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/imagefleet/" in f.filename and "site-packages" not in f.filename]

    def show(frame: traceback.FrameSummary) -> str:
        name = frame.filename
        if "site-packages/" in name:
            name = name.split("site-packages/")[-1]
        elif "/imagefleet/" in name:
            name = name[name.rfind("/imagefleet/") + 1 :]
        return f"{name}:{frame.lineno} in {frame.name}"

    raised = show(frames[-1]) if frames else "?"
    if not ours or ours[-1] is frames[-1]:
        return raised
    return f"{raised} (via {show(ours[-1])})"


def is_error_shape(response: http_client.Response) -> bool:
    """The app's errors are JSON objects with a `detail`, whatever raised them."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "detail" in body


@dataclass
class Sent:
    """One request as sent, and how the report shows it."""

    role: Role
    hostile: str
    steered_submit: bool
    headers: dict[str, str]
    example: str


class OperationFuzz:
    """One operation in one generation mode: its strategy, its steering, its checks."""

    def __init__(self, world: World, stats: Stats, operation: Any, mode: GenerationMode) -> None:
        self.world, self.stats, self.operation = world, stats, operation
        self.label, self.audience = operation.label, audience(operation.path)
        self.positive = mode is GenerationMode.POSITIVE
        names = {parameter.name for parameter in operation.path_parameters}
        # Real ids only for an operation whose path takes them (making them is ten requests).
        self.real = world.real_ids(stats) if names else {}
        self.strategies = [operation.as_strategy(generation_mode=mode)]
        self.owned: set[str] = set()
        for job_key in ("done_job_id", "live_job_id") if names else ():
            fixed = {
                "job_id": self.real[job_key],
                "attempt_id": self.real["attempt_id"],
                "node_id": self.real["node_id"],
                "index": 0,
            }
            fixed = {name: value for name, value in fixed.items() if name in names}
            self.owned.update(str(value) for name, value in fixed.items() if name != "index")
            self.strategies.append(
                operation.as_strategy(generation_mode=mode, path_parameters=fixed)
            )
        # PostgreSQL's run is short and there for the strings it refuses: inject more often.
        self.hostile_odds = 2 if world.dialect == "postgresql" else 5

    def run(self, examples: int, op_seed: int) -> None:
        @hypothesis_settings(
            max_examples=examples,
            deadline=None,
            database=None,  # nothing written under the work tree; IMAGEFLEET_FUZZ_SEED replays
            phases=[Phase.generate],  # findings are collected, not raised: nothing to shrink
            suppress_health_check=list(HealthCheck),
        )
        @seed(op_seed)
        @given(case=st.one_of(self.strategies), data=st.data())
        def fuzz(case: schemathesis.Case, data: st.DataObject) -> None:
            self.one(case, data)

        started = time.monotonic()
        try:
            fuzz()
        except Unsatisfiable:
            # Nothing to negate (no parameters, no body: GET /healthz); positive mode covers it.
            assert self.positive is False, self.label
        self.stats.seconds_by_operation[self.label] += time.monotonic() - started

    def steer(self, case: schemathesis.Case, data: st.DataObject) -> bool:
        """Positive cases only (a negative one must stay negative); True for a steered
        submit, which the server must then accept."""
        if not self.positive:
            return False
        label = self.label
        if label == "GET /v1/jobs" and data.draw(st.booleans(), label="steer_cursor"):
            steer_cursor(case, data)
        if (
            label == "POST /v1/worker/attempts/{attempt_id}/complete"
            and (case.path_parameters or {}).get("attempt_id") == self.real["attempt_id"]
            and isinstance(case.body, dict)
            and case.body.get("outputs")
            and data.draw(st.booleans(), label="steer_complete")
        ):
            self.world.steer_complete(case, self.real)
        if label != "POST /v1/jobs" or not data.draw(st.booleans(), label="steer_submit"):
            return False
        if not steer_submit(case, data):
            return False
        if data.draw(st.booleans(), label="with_kind"):
            cast("dict[str, Any]", case.body)["kind"] = "txt2img"
        return True

    def one(self, case: schemathesis.Case, data: st.DataObject) -> None:
        """Builds, sends and judges one generated request."""
        public = self.audience == "public"
        role = Role.owner if public else data.draw(st.sampled_from(ROLES), label="role")
        steered = self.steer(case, data)
        kwargs = case.as_transport_kwargs(base_url=BASE_URL)
        hostile = ""
        if self.positive and data.draw(st.integers(1, self.hostile_odds), label="hostile") == 1:
            hostile = inject_hostile(case, kwargs, data)
        headers = {
            name: value
            for name, value in kwargs.get("headers", {}).items()
            if name.lower() not in ("authorization", "x-schemathesis-testcaseid")
        }
        if not public and role is not Role.anonymous:
            tokens = self.world.tokens[self.audience][role]
            headers["Authorization"] = f"Bearer {data.draw(st.sampled_from(tokens), label='key')}"
        content: bytes | None = None
        shown: Any = kwargs.get("json")
        if self.operation.method.upper() == "PUT":
            # The document declares no request body for uploads (a raw PNG stream), so the
            # generator sends none: draw the body and its content type here.
            content = shown = data.draw(st.binary(max_size=512), label="upload_body")
            upload_type = data.draw(
                st.sampled_from(["image/png", "image/png; q=1", "text/plain", "", None]),
                label="upload_type",
            )
            if upload_type is not None:
                headers["Content-Type"] = upload_type
        elif "json" in kwargs:
            # Serialized here (not by httpx) so that a lone surrogate travels as its JSON escape.
            content = json.dumps(kwargs["json"]).encode()
        elif "data" in kwargs:
            raw = kwargs["data"]
            content = shown = raw.encode() if isinstance(raw, str) else raw
        method, url = kwargs["method"], kwargs["url"]
        params = kwargs.get("params") or None
        shown_url = url + (f"?{http_client.QueryParams(params)}" if params else "")
        sent = Sent(
            role, hostile, steered, headers, describe(method, shown_url, role, headers, shown)
        )
        stats, label = self.stats, self.label
        stats.requests += 1
        stats.by_operation[label] += 1
        if hostile:
            stats.hostile_requests[repr(hostile)] += 1
        started = time.monotonic()
        try:
            response = self.world.api.request(
                method,
                url,
                params=params,
                headers=headers,
                content=content,
                cookies=kwargs.get("cookies") or None,
            )
        except http_client.HTTPError:
            raise  # the request could not be sent: a bug in this harness, not in the app
        except Exception as exc:
            stats.statuses[label][500] += 1
            stats.by_role[role.value][500] += 1
            detail = f"unhandled {type(exc).__name__} at {where(exc)}"
            message = str(exc).splitlines()[0][:200] if str(exc) else ""
            stats.found("server error", label, detail, f"{sent.example}\n    {message}")
            return
        finally:
            stats.request_seconds += time.monotonic() - started
        self.judge(case, sent, response)

    def judge(self, case: schemathesis.Case, sent: Sent, response: http_client.Response) -> None:
        """Records every property this response breaks."""
        stats, label, example, status = self.stats, self.label, sent.example, response.status_code
        stats.statuses[label][status] += 1
        stats.by_role[sent.role.value][status] += 1
        # The compatibility endpoints wait for their jobs and answer a documented 504 naming
        # the job when it does not finish in time: here no worker runs and they wait 0 s.
        by_design = status == 504 and self.operation.path.startswith(COMPAT_PATHS)
        if status >= 500 and not by_design:
            stats.found("server error", label, f"{status}: {response.text[:200]}", example)
        if str(status) not in self.operation.definition.raw.get("responses", {}):
            stats.undocumented[label].add(status)
            if status not in KNOWN_UNDOCUMENTED.get(label, set()):
                stats.found("undocumented status", label, str(status), example)
            if status < 500 and not is_error_shape(response):
                stats.found("error body", label, f"{status}: {response.text[:200]}", example)
        try:
            checks = [c for c in CHECKS if not (by_design and c is not_a_server_error)]
            case.validate_response(response, checks=checks, headers=sent.headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                detail = f"{failure.title} ({status})"
                stats.found("schema", label, detail, f"{example}\n    {failure.message}")
        if 200 <= status < 300:
            if sent.role in (Role.anonymous, Role.garbage, Role.wrong_scope):
                stats.found("auth", label, f"{sent.role.value} key got {status}", example)
            values = {str(v) for v in (case.path_parameters or {}).values()}
            if sent.role is Role.stranger and self.audience != "admin" and values & self.owned:
                stats.found("auth", label, f"another tenant got {status} on owned ids", example)
        # 409: an Idempotency-Key reused with another body; 429: the key's rate limit. Text
        # that cannot be stored may be refused, and a hostile string put into the model's name
        # makes an unknown model.
        accepted = status in (200, 201, 409, 429)
        refusable = sent.hostile or unstorable(case.body)
        if sent.steered_submit and not refusable and sent.role is Role.owner and not accepted:
            detail = f"a submit the document calls valid got {status}: {response.text[:200]}"
            stats.found("valid request refused", label, detail, example)


# IMAGEFLEET_FUZZ_DIALECTS picks the databases (conftest's database_url, parametrized here).
@pytest.mark.parametrize("database_url", DIALECTS, indirect=True)
def test_fuzz_every_operation_from_the_openapi_document(world: World) -> None:
    """Every operation of the document, positive and negative, with every role."""
    started = time.monotonic()
    examples = EXAMPLES if world.dialect == "sqlite" else PG_EXAMPLES
    document = world.api.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document, config=SCHEMATHESIS_CONFIG)
    operations = [
        schema[path][method.upper()]
        for path, methods in document["paths"].items()
        for method in methods
    ]
    assert len(operations) >= 15, [op.label for op in operations]
    knob = (
        "IMAGEFLEET_FUZZ_EXAMPLES" if world.dialect == "sqlite" else "IMAGEFLEET_FUZZ_PG_EXAMPLES"
    )
    share = examples if os.environ.get(knob) else _share(examples, len(operations))
    per_seed = math.ceil(share / len(RUN_SEEDS))
    stats = Stats()
    for run_seed in RUN_SEEDS:
        stats.seed = run_seed
        rng = random.Random(run_seed)
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                OperationFuzz(world, stats, operation, mode).run(per_seed, rng.randrange(2**32))
    elapsed = time.monotonic() - started
    summary = _summary(world.dialect, stats, elapsed, per_seed, operations)
    print(summary)
    if REPORT:
        _write_report(Path(REPORT), world.dialect, stats, elapsed, per_seed)
    required = min(REQUIRED_REQUESTS, REQUESTS_PER_EXAMPLE_FLOOR * examples)
    unreached = [op.label for op in operations if not stats.by_operation[op.label]]
    assert not unreached, f"operations never fuzzed: {unreached}"
    assert stats.requests >= required, f"{stats.requests} requests, not {required}\n{summary}"
    assert stats.hostile_requests["'\\x00'"], "no NUL-bearing request was sent"
    if stats.findings:
        pytest.fail(_findings_text(world.dialect, stats, per_seed) + summary)


def _share(examples: int, operations: int) -> int:
    """Each operation's examples when the budget of BUDGET_OPERATIONS is spread over more."""
    return max(len(RUN_SEEDS), math.ceil(examples * min(1.0, BUDGET_OPERATIONS / operations)))


def _summary(
    dialect: str, stats: Stats, elapsed: float, examples: int, operations: list[Any]
) -> str:
    hostile = ", ".join(f"{n} with {s}" for s, n in sorted(stats.hostile_requests.items()))
    lines = [
        f"fuzz on {dialect}, seeds {', '.join(map(str, RUN_SEEDS))}: {stats.requests} requests "
        f"({hostile}) in {elapsed:.1f} s ({stats.request_seconds:.1f} s answering them), "
        f"{examples} examples per operation, mode and seed"
    ]
    for op in operations:
        counts = ", ".join(f"{s}x{n}" for s, n in sorted(stats.statuses[op.label].items()))
        lines.append(
            f"  {op.label}: {stats.by_operation[op.label]} requests "
            f"in {stats.seconds_by_operation[op.label]:.1f} s ({counts})"
        )
    for role, by_status in sorted(stats.by_role.items()):
        shown = ", ".join(f"{s}x{n}" for s, n in sorted(by_status.items()))
        lines.append(f"  as {role}: {shown}")
    for label, codes in sorted(stats.undocumented.items()):
        lines.append(f"  undocumented: {label} -> {sorted(codes)}")
    return "\n".join(lines)


def replay_command(dialect: str, seed: int, examples: int) -> str:
    """The command that sends the same requests as one seed of this run."""
    knob = "IMAGEFLEET_FUZZ_EXAMPLES" if dialect == "sqlite" else "IMAGEFLEET_FUZZ_PG_EXAMPLES"
    return (
        f"IMAGEFLEET_FUZZ_DIALECTS={dialect} IMAGEFLEET_FUZZ_SEED={seed} {knob}={examples} "
        ".venv/bin/pytest tests/integration/test_fuzz.py"
    )


def _findings_text(dialect: str, stats: Stats, examples: int) -> str:
    parts = [f"{len(stats.findings)} findings:"]
    for finding in stats.findings.values():
        parts.append(
            f"- [{finding.kind}] {finding.operation}: {finding.detail} (x{finding.count})\n"
            f"    {finding.example}\n"
            f"    replay: {replay_command(dialect, finding.seed, examples)}"
        )
    return "\n".join(parts) + "\n"


def _write_report(path: Path, dialect: str, stats: Stats, elapsed: float, examples: int) -> None:
    """One JSON file per dialect: `fuzz.json` becomes `fuzz-sqlite.json` and so on."""
    target = path.with_name(f"{path.stem}-{dialect}{path.suffix or '.json'}")
    report = {
        "dialect": dialect,
        "seeds": list(RUN_SEEDS),
        "examples": examples,
        "requests": stats.requests,
        "hostile_requests": dict(stats.hostile_requests),
        "seconds": round(elapsed, 1),
        "request_seconds": round(stats.request_seconds, 1),
        "statuses": {label: dict(counts) for label, counts in stats.statuses.items()},
        "undocumented": {label: sorted(codes) for label, codes in stats.undocumented.items()},
        "findings": [vars(finding) for finding in stats.findings.values()],
    }
    target.write_text(json.dumps(report, indent=2, default=str))
