"""Creates the artifact bucket named by IMAGEFLEET_S3_* if it is missing, then runs the
orchestrator's own start-up check on it (write and delete a probe object).

For stacks that bring their own S3-compatible server (the compose file's SeaweedFS): the
orchestrator refuses to start without its bucket, and a fresh server has none. It retries until
`--wait` seconds have passed, since such a server accepts connections before it can store
anything. Safe to run on every start: an existing bucket is left as it is.

    python create_bucket.py [--wait SECONDS]
"""

from __future__ import annotations

import argparse
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from imagefleet.artifacts.base import ArtifactStoreError
from imagefleet.artifacts.s3 import S3ArtifactStore
from imagefleet.artifacts.s3_config import S3Config

RETRY_SECONDS = 1.0


def ensure_bucket(config: S3Config) -> bool:
    """Creates the bucket unless it exists; True when it was created."""
    secret = config.secret_access_key.get_secret_value() if config.secret_access_key else None
    client = boto3.client(
        "s3",
        endpoint_url=config.endpoint_url,
        region_name=config.region,
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=secret,
        config=Config(signature_version="s3v4", s3={"addressing_style": config.addressing_style}),
    )
    try:
        client.head_bucket(Bucket=config.bucket)
        return False
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in {"404", "NoSuchBucket", "NotFound"}:
            raise
    options = {}
    if config.region != "us-east-1":
        options["CreateBucketConfiguration"] = {"LocationConstraint": config.region}
    client.create_bucket(Bucket=config.bucket, **options)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to keep retrying")
    args = parser.parse_args(argv)
    try:
        config = S3Config.from_env()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if config is None:
        print("error: IMAGEFLEET_S3_BUCKET is not set: nothing to create", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.wait
    while True:
        try:
            created = ensure_bucket(config)
            S3ArtifactStore(config).check()
        except (ClientError, BotoCoreError, ArtifactStoreError) as exc:
            if time.monotonic() >= deadline:
                print(
                    f"error: {config.describe()} not usable after {args.wait:.0f}s: {exc}",
                    file=sys.stderr,
                )
                return 1
            time.sleep(RETRY_SECONDS)
            continue
        print(f"{'created' if created else 'found'} {config.describe()}; writable")
        return 0


if __name__ == "__main__":
    sys.exit(main())
