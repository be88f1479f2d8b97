"""Generation through the whole stack: client -> orchestrator process -> worker processes -> PNG.

These run the real diffusers pipeline on the tiny demo model, so what they check (sizes, seeds,
schedulers, determinism, progress) is what a user would see with a real checkpoint.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from imagefleet.api_views import JobView
from imagefleet.protocol import SCHEDULER_NAMES, JobStatus
from imagefleet.worker.png import read_parameters
from tests.e2e.conftest import Fleet

# The limit counts a test's fixtures too: the first e2e test of a pytest process also pays
# for the session's demo model, keys and shared fleet (40 s alone, 87 s seen in the full suite
# on 2 cores, where 90 s was not enough); the tests themselves take seconds.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

PROMPT = "a detailed photo of a red cat"


def job_params(**overrides: Any) -> dict[str, Any]:
    """Small and quick by default: the demo model costs about 50 ms a step at 64x64 here."""
    return {
        "prompt": PROMPT,
        "model": "demo",
        "width": 64,
        "height": 64,
        "steps": 3,
        "seed": 1,
        **overrides,
    }


def pixels(data: bytes) -> tuple[tuple[int, int], bytes]:
    """The decoded image (size and RGB bytes): what a viewer shows, not how the file encodes it."""
    with Image.open(io.BytesIO(data)) as image:
        return image.size, image.convert("RGB").tobytes()


def run_jobs(fleet: Fleet, requests: list[dict[str, Any]]) -> list[JobView]:
    """Submits every job before waiting, so that both workers run in parallel."""
    submitted = [fleet.client.submit_txt2img(request) for request in requests]
    finished = [fleet.wait_final(job.id, timeout=60) for job in submitted]
    for job in finished:
        assert job.status is JobStatus.succeeded, job
    return finished


# Every scheduler, square and non-square sizes, a negative prompt, and one multi-image job.
VARIED_JOBS = [
    job_params(scheduler="ddim", seed=101),
    job_params(scheduler="euler", width=64, height=128, seed=202),
    job_params(scheduler="euler_ancestral", width=128, height=64, seed=303),
    job_params(scheduler="dpmpp_2m", width=128, height=128, steps=2, seed=404),
    job_params(scheduler="dpmpp_2m_karras", width=96, height=64, seed=505),
    job_params(scheduler="lms", width=64, height=96, seed=606, negative_prompt="blurry"),
    job_params(scheduler="pndm", seed=707, num_images=2),
    job_params(scheduler="heun", width=64, height=72, seed=808),
    job_params(scheduler="dpmpp_sde", seed=909),
    job_params(scheduler="dpmpp_sde_karras", width=72, height=64, seed=1010),
    job_params(scheduler="dpmpp_2m_sde", seed=1111),
    job_params(scheduler="dpmpp_2m_sde_karras", seed=1212),
    job_params(scheduler="unipc", seed=1313),
    job_params(scheduler="lcm", seed=1414),
]


def test_jobs_of_every_scheduler_and_size_yield_pngs_of_exactly_the_requested_size(
    shared_fleet: Fleet,
) -> None:
    assert {job["scheduler"] for job in VARIED_JOBS} == set(SCHEDULER_NAMES)
    (demo,) = [model for model in shared_fleet.client.models() if model.name == "demo"]

    for request, job in zip(VARIED_JOBS, run_jobs(shared_fleet, VARIED_JOBS), strict=True):
        expected_count = request.get("num_images", 1)
        assert [output.index for output in job.outputs] == list(range(expected_count))
        for output in job.outputs:
            data = shared_fleet.client.download(job.id, output.index)
            with Image.open(io.BytesIO(data)) as image:
                assert image.format == "PNG"
                assert image.size == (request["width"], request["height"])
            assert (output.width, output.height) == (request["width"], request["height"])
            assert output.seed == request["seed"] + output.index

            embedded = read_parameters(data)
            for name in ("prompt", "model", "width", "height", "steps", "scheduler"):
                assert embedded[name] == request[name], name
            assert embedded.get("negative_prompt") == request.get("negative_prompt")
            assert embedded["seed"] == output.seed
            assert embedded["model_sha256"] == demo.sha256


def test_a_multi_image_job_gives_distinct_images_with_consecutive_seeds(
    shared_fleet: Fleet,
) -> None:
    (job,) = run_jobs(shared_fleet, [job_params(seed=9000, num_images=2)])

    assert [(o.index, o.seed) for o in job.outputs] == [(0, 9000), (1, 9001)]
    first, second = (shared_fleet.client.download(job.id, o.index) for o in job.outputs)
    assert [read_parameters(d)["seed"] for d in (first, second)] == [9000, 9001]
    assert pixels(first) != pixels(second)


def test_the_same_seed_gives_identical_pixels_and_another_seed_different_pixels(
    shared_fleet: Fleet,
) -> None:
    # An ancestral sampler draws fresh noise at every step: the strictest determinism check.
    same = job_params(scheduler="euler_ancestral", seed=42)
    jobs = run_jobs(shared_fleet, [same, same, {**same, "seed": 43}])
    first, again, other = (pixels(shared_fleet.client.download(j.id, 0)) for j in jobs)

    assert first == again
    assert first != other


def test_each_image_of_a_multi_image_job_is_reproduced_alone_by_its_own_seed(
    shared_fleet: Fleet,
) -> None:
    batch, alone = run_jobs(
        shared_fleet, [job_params(seed=500, num_images=2), job_params(seed=501)]
    )

    second_of_batch = shared_fleet.client.download(batch.id, 1)
    assert pixels(second_of_batch) == pixels(shared_fleet.client.download(alone.id, 0))


def test_progress_advances_while_running_and_ends_at_one(shared_fleet: Fleet) -> None:
    # Long enough for several progress heartbeats (at most one each 0.5 s) even when the
    # resident model runs 60 steps in under a second on a quiet machine (150 is the most allowed).
    job = shared_fleet.client.submit_txt2img(job_params(steps=150, scheduler="euler"))
    seen: list[JobView] = []

    shared_fleet.wait_until(
        job.id, lambda j: j.status.is_final, timeout=60, poll_seconds=0.05, seen=seen
    )

    midway = [
        j.progress
        for j in seen
        if j.status is JobStatus.running and 0 < j.progress.step < j.progress.total_steps
    ]
    assert midway, [(j.status.value, j.progress) for j in seen]
    assert all(0.0 < p.fraction < 1.0 for p in midway)
    assert [p.step for p in midway] == sorted(p.step for p in midway)
    final = seen[-1]
    assert final.status is JobStatus.succeeded
    assert final.progress.fraction == 1.0
    assert final.progress.step == final.progress.total_steps >= 60
