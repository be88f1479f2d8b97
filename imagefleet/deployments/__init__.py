"""Versioned deployments: packages of user code (a Python pipeline) or a ComfyUI graph that
run on the fleet as jobs. This package is pure: packing and safe reading of archives
(package.py) and the manifest with its checks (manifest.py). The store, the API, the worker
and the CLI build on it; nothing here imports the orchestrator, the store or torch."""

from imagefleet.deployments.manifest import (
    Manifest,
    PipelineType,
    check_inputs,
    inject,
    load_manifest,
)
from imagefleet.deployments.package import (
    MAX_PACKAGE_BYTES,
    MAX_UNPACKED_BYTES,
    PackageInvalid,
    extract,
    pack,
    package_files,
    package_sha256,
)

__all__ = [
    "MAX_PACKAGE_BYTES",
    "MAX_UNPACKED_BYTES",
    "Manifest",
    "PackageInvalid",
    "PipelineType",
    "check_inputs",
    "extract",
    "inject",
    "load_manifest",
    "pack",
    "package_files",
    "package_sha256",
]
