"""A real worker process on an S3-compatible store (SeaweedFS): outputs go straight from the
worker to the bucket through presigned URLs and come back to the client the same way."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from imagefleet.worker.png import read_parameters
from tests.e2e.conftest import FleetFactory
from tests.seaweed import SeaweedS3

pytestmark = pytest.mark.e2e


def test_a_worker_uploads_to_the_bucket_and_the_client_downloads_from_it(
    start_fleet: FleetFactory, seaweed: SeaweedS3
) -> None:
    bucket = seaweed.create_bucket()
    fleet = start_fleet(
        workers=1,
        s3_endpoint_url=seaweed.endpoint_url,
        s3_bucket=bucket,
        s3_access_key_id=seaweed.access_key,
        s3_secret_access_key=seaweed.secret_key,
    )
    job = fleet.client.submit_txt2img(
        {
            "prompt": "a lighthouse",
            "model": "demo",
            "width": 64,
            "height": 96,
            "steps": 3,
            "seed": 11,
            "num_images": 2,
        }
    )
    done = fleet.wait_final(job.id)
    assert done.status.value == "succeeded", done.error
    stored = seaweed.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert len(stored) == 2 and all(o["Key"].startswith(f"jobs/{job.id}/") for o in stored)
    for output in done.outputs:
        assert "X-Amz-Signature" in output.url
        data = httpx.get(output.url).content
        with Image.open(io.BytesIO(data)) as image:
            assert image.size == (64, 96)
        assert read_parameters(data)["seed"] == 11 + output.index
    assert not fleet.artifact_files(job.id)  # nothing went through the local store
