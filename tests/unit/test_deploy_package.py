"""Deployment packages without a server: packing is deterministic, unsafe archives and
directories are refused, and deployment code's environment holds no worker secret."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imagefleet.deployments import PackageInvalid, extract, pack, package_files
from imagefleet.deployments.manifest import check_inputs, inject
from imagefleet.errors import InvalidField
from imagefleet.worker.deploy_process import scrubbed_environment


def test_the_same_content_packs_to_the_same_bytes_whatever_the_times(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    (folder / "sub").mkdir(parents=True)
    (folder / "pipeline.py").write_text("def run(inputs, context):\n    return []\n")
    (folder / "sub" / "data.txt").write_text("x")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "junk.pyc").write_bytes(b"junk")
    first = pack(folder)
    os.utime(folder / "pipeline.py", (1, 1))
    assert pack(folder) == first
    assert sorted(package_files(first)) == ["pipeline.py", "sub/data.txt"]
    extract(first, tmp_path / "out")
    assert (tmp_path / "out" / "sub" / "data.txt").read_text() == "x"


def test_a_symlink_in_the_directory_is_refused_not_followed(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "secrets").symlink_to("/etc/passwd")
    with pytest.raises(PackageInvalid, match="symlink"):
        pack(folder)


def test_deployment_code_sees_no_worker_secret() -> None:
    seen = scrubbed_environment(
        {
            "PATH": "/usr/bin",
            "HOME": "/root",
            "IMAGEFLEET_WORKER_KEY": "if_x",
            "IMAGEFLEET_DATABASE_URL": "postgresql://u:p@db/x",
            "AWS_SECRET_ACCESS_KEY": "s",
            "HF_TOKEN": "t",
            "PYTHONPATH": "/worker",
        }
    )
    assert {k: v for k, v in seen.items() if not k.startswith("PYTHON")} == {
        "PATH": "/usr/bin",
        "HOME": "/root",
    }
    assert "PYTHONPATH" not in seen


def test_inputs_are_checked_and_injected_where_the_manifest_says() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    with pytest.raises(InvalidField) as error:
        check_inputs(schema, {"n": "three"}, ("body", "inputs"))
    assert error.value.loc == ("body", "inputs", "n")
    graph = {"3": {"class_type": "KSampler", "inputs": {"seed": 1}}}
    injected = inject(graph, {"n": "3.inputs.seed"}, {"n": 9})
    assert (injected["3"]["inputs"]["seed"], graph["3"]["inputs"]["seed"]) == (9, 1)
