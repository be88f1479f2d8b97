"""Job kinds end to end: img2img and inpaint through real processes, and a kind defined only
in the test suite (tests/toy_kind.py) run by a real worker."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from imagefleet.protocol import JobStatus
from imagefleet.worker.png import read_parameters
from tests.e2e.conftest import Fleet, FleetFactory

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_img2img_and_inpaint_run_through_the_fleet(shared_fleet: Fleet) -> None:
    client = shared_fleet.client
    init = Image.effect_noise((64, 64), 40).convert("RGB")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (24, 24, 40, 40))
    init_id = client.upload_input(png(init)).id
    mask_id = client.upload_input(png(mask)).id
    common = {"prompt": "a fox", "model": "demo", "steps": 4, "seed": 3}
    variation = client.submit("img2img", {**common, "init_image": init_id, "strength": 0.5})
    repaint = client.submit(
        "inpaint", {**common, "init_image": init_id, "mask": mask_id, "mask_blur": 1}
    )
    done = shared_fleet.wait_final(variation.id)
    assert done.status is JobStatus.succeeded, done.error
    data = client.download(done.id, 0)
    assert read_parameters(data)["init_image"] == init_id
    assert Image.open(io.BytesIO(data)).size == (64, 64)

    done = shared_fleet.wait_final(repaint.id)
    assert done.status is JobStatus.succeeded, done.error
    out = np.asarray(Image.open(io.BytesIO(client.download(done.id, 0))).convert("RGB"))
    before = np.asarray(init)
    outside = np.ones((64, 64), dtype=bool)
    outside[24 - 4 : 40 + 4, 24 - 4 : 40 + 4] = False
    assert np.array_equal(out[outside], before[outside])


def test_a_kind_defined_in_the_test_suite_runs_end_to_end(start_fleet: FleetFactory) -> None:
    fleet = start_fleet(workers=0, kind_plugins="tests.toy_kind")
    fleet.worker_env["IMAGEFLEET_WORKER_HANDLERS"] = "tests.toy_kind"
    fleet.start_worker()
    job = fleet.client.submit("echo", {"text": "  hello  ", "copies": 2, "shout": True})
    assert job.kind == "echo" and job.params["text"] == "hello"
    done = fleet.wait_final(job.id)
    assert done.status is JobStatus.succeeded, done.error
    assert [o.content_type for o in done.outputs] == ["text/plain", "text/plain"]
    assert fleet.client.download(job.id, 1) == b"1: HELLO"
    refused = fleet.client.http.post(
        "/v1/jobs", json={"kind": "echo", "params": {"text": "x", "copies": 9}}
    )
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"][-1] == "copies"
