"""Training datasets: what is accepted, how it is normalized, and every refusal with its reason."""

import io
import stat
import zipfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from imagefleet.training.dataset import (
    load_instance_images,
    load_zip_dataset,
    to_zip,
)
from imagefleet.training.dataset_archive import DEFAULT_LIMITS, DatasetError


def _image(
    color: tuple[int, int, int] = (200, 30, 30),
    size: tuple[int, int] = (24, 16),
    image_format: str = "PNG",
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, image_format)
    return buffer.getvalue()


def _zip(entries: Mapping[str, bytes | str], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


CAPTIONED = {
    "b.png": _image((0, 0, 255)),
    "b.txt": "a photo of\n sks  dog ",
    "a.jpg": _image((0, 255, 0), image_format="JPEG"),
    "a.txt": "sks dog on the grass",
}


def test_a_captioned_zip_becomes_a_manifest_sorted_by_name_with_clean_captions() -> None:
    manifest = load_zip_dataset(_zip(CAPTIONED))
    assert [item.name for item in manifest.items] == ["a.jpg", "b.png"]
    assert [item.caption for item in manifest.items] == [
        "sks dog on the grass",
        "a photo of sks dog",
    ]
    assert (manifest.items[1].width, manifest.items[1].height, manifest.items[1].format) == (
        24,
        16,
        "PNG",
    )
    assert len(manifest.sha256) == 64
    assert "data" not in manifest.describe()[0]


def test_the_manifest_hash_ignores_archive_details_but_not_captions(tmp_path: Path) -> None:
    first = load_zip_dataset(_zip(CAPTIONED))
    stored = load_zip_dataset(_zip(dict(reversed(CAPTIONED.items())), zipfile.ZIP_STORED))
    assert stored.sha256 == first.sha256
    path = tmp_path / "dataset.zip"
    path.write_bytes(_zip(CAPTIONED))
    assert load_zip_dataset(path).sha256 == first.sha256
    recaptioned = load_zip_dataset(_zip({**CAPTIONED, "a.txt": "another caption"}))
    assert recaptioned.sha256 != first.sha256


def test_the_canonical_zip_loads_back_to_the_same_manifest_without_the_instance_prompt() -> None:
    manifest = load_instance_images(
        [("one.png", _image()), ("two.png", _image((1, 2, 3)))], "a photo of sks cat"
    )
    canonical = to_zip(manifest)
    assert canonical == to_zip(manifest)
    again = load_zip_dataset(canonical)
    assert again.sha256 == manifest.sha256
    assert {item.caption for item in again.items} == {"a photo of sks cat"}


def test_images_without_captions_take_the_instance_prompt_others_keep_theirs() -> None:
    entries = {"x/1.png": _image(), "x/2.png": _image(), "x/2.txt": "its own caption"}
    manifest = load_zip_dataset(_zip(entries), instance_prompt="sks toy")
    assert [item.caption for item in manifest.items] == ["sks toy", "its own caption"]


def test_archiver_litter_is_ignored() -> None:
    entries = {**CAPTIONED, "__MACOSX/._a.jpg": b"junk", ".DS_Store": b"junk", "dir/._b.png": b"x"}
    assert len(load_zip_dataset(_zip(entries)).items) == 2


def test_missing_captions_are_listed_by_file_when_there_is_no_instance_prompt() -> None:
    entries = {"a.png": _image(), "b.png": _image(), "c.png": _image(), "c.txt": "  "}
    with pytest.raises(DatasetError, match="no caption") as caught:
        load_zip_dataset(_zip(entries))
    assert len(caught.value.problems) == 3
    assert caught.value.problems[0].startswith("a.png: no caption (a.txt missing")


def test_an_undecodable_image_is_named() -> None:
    entries = {**CAPTIONED, "c.png": b"\x89PNG\r\n\x1a\nnot really", "c.txt": "x"}
    with pytest.raises(DatasetError, match=r"c\.png: not a decodable image"):
        load_zip_dataset(_zip(entries))


def test_a_truncated_image_is_refused() -> None:
    entries = {"a.jpg": _image(size=(64, 64), image_format="JPEG")[:200], "a.txt": "x"}
    with pytest.raises(DatasetError, match=r"a\.jpg: not a decodable image"):
        load_zip_dataset(_zip(entries))


def test_an_image_format_outside_the_list_is_refused_whatever_its_suffix() -> None:
    entries = {"a.png": _image(image_format="GIF"), "a.txt": "x"}
    with pytest.raises(DatasetError, match="GIF images are not supported"):
        load_zip_dataset(_zip(entries))


def test_unsupported_files_are_refused_with_the_expected_types() -> None:
    with pytest.raises(DatasetError, match=r"unsupported files in the archive: a\.heic.*\.png"):
        load_zip_dataset(_zip({**CAPTIONED, "a.heic": b"x"}))


@pytest.mark.parametrize("data", [b"", b"PK\x03\x04 definitely not a zip", b"\x00" * 64])
def test_bytes_that_are_not_a_zip_are_refused(data: bytes) -> None:
    with pytest.raises(DatasetError, match="not a readable zip archive"):
        load_zip_dataset(data)


def test_a_zip_with_a_damaged_entry_is_refused() -> None:
    data = bytearray(_zip({"a.png": _image(size=(64, 64)), "a.txt": "x"}, zipfile.ZIP_STORED))
    start = data.index(b"IHDR") + 20  # inside the stored PNG: the CRC check must catch it
    data[start : start + 8] = b"\xff" * 8
    with pytest.raises(DatasetError, match=r"cannot be extracted.*corrupt"):
        load_zip_dataset(bytes(data))


@pytest.mark.parametrize(
    "entries",
    [{}, {"a.txt": "caption only"}, {"folder/": b""}],
    ids=["empty", "captions-only", "folders-only"],
)
def test_a_dataset_without_images_is_refused(entries: dict[str, bytes | str]) -> None:
    with pytest.raises(DatasetError, match="holds no images"):
        load_zip_dataset(_zip(entries))


@pytest.mark.parametrize(
    "name", ["../evil.png", "a/../../evil.png", "/etc/evil.png", "C:/evil.png", "a\\..\\evil.png"]
)
def test_entry_names_that_escape_the_folder_are_refused(name: str) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("ok.txt"), "x")
        info = zipfile.ZipInfo("placeholder")
        info.filename = name  # ZipInfo normalizes names given to it; attackers' archives do not
        archive.writestr(info, _image())
    with pytest.raises(DatasetError, match=r"outside the dataset|absolute or uses backslashes"):
        load_zip_dataset(buffer.getvalue())


def test_symbolic_links_are_refused() -> None:
    info = zipfile.ZipInfo("a.png")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(info, "/etc/passwd")
    with pytest.raises(DatasetError, match="symbolic link"):
        load_zip_dataset(buffer.getvalue())


def test_encrypted_entries_are_refused() -> None:
    data = bytearray(_zip({"a.png": _image(), "a.txt": "x"}))
    # zipfile cannot write encrypted entries: set the "encrypted" flag bit in the headers.
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = data.index(signature) + flags_at
        data[start] |= 0x1
    with pytest.raises(DatasetError, match="encrypted"):
        load_zip_dataset(bytes(data))


def test_a_zip_bomb_is_refused_before_it_is_inflated() -> None:
    bomb = _zip({"a.png": b"\x00" * (8 << 20), "a.txt": "x"})
    assert len(bomb) < 100_000
    with pytest.raises(DatasetError, match="possible zip bomb"):
        load_zip_dataset(bomb)


def test_size_count_and_pixel_limits_are_enforced() -> None:
    with pytest.raises(DatasetError, match="at most 100 are allowed per file"):
        load_zip_dataset(_zip(CAPTIONED), limits=replace(DEFAULT_LIMITS, max_image_bytes=100))
    with pytest.raises(DatasetError, match="at most 1 are allowed"):
        load_zip_dataset(_zip(CAPTIONED), limits=replace(DEFAULT_LIMITS, max_images=1))
    with pytest.raises(DatasetError, match="at most 3 are allowed"):
        load_zip_dataset(_zip(CAPTIONED), limits=replace(DEFAULT_LIMITS, max_entries=3))
    with pytest.raises(DatasetError, match="more than 100 pixels"):
        load_zip_dataset(_zip(CAPTIONED), limits=replace(DEFAULT_LIMITS, max_pixels=100))
    with pytest.raises(DatasetError, match="unpacks to more than"):
        load_zip_dataset(_zip(CAPTIONED), limits=replace(DEFAULT_LIMITS, max_total_bytes=200))
    with pytest.raises(DatasetError, match="smaller than 20 pixels a side"):
        load_zip_dataset(_zip(CAPTIONED), limits=replace(DEFAULT_LIMITS, min_side=20))


def test_two_images_sharing_a_caption_name_are_ambiguous() -> None:
    with pytest.raises(DatasetError, match=r"a\.png: shares its caption name with a\.jpg"):
        load_zip_dataset(_zip({**CAPTIONED, "a.png": _image()}))


def test_a_caption_without_its_image_and_a_caption_that_is_not_text_are_named() -> None:
    with pytest.raises(DatasetError, match=r"c\.txt: caption without an image"):
        load_zip_dataset(_zip({**CAPTIONED, "c.txt": "orphan"}))
    with pytest.raises(DatasetError, match=r"a\.txt: not UTF-8 text"):
        load_zip_dataset(_zip({**CAPTIONED, "a.txt": b"\xff\xfe\xfa"}))


def test_instance_images_need_distinct_safe_names_and_a_prompt() -> None:
    with pytest.raises(DatasetError, match="two images are named"):
        load_instance_images([("a.png", _image()), ("a.png", _image())], "sks")
    with pytest.raises(DatasetError, match="outside the dataset"):
        load_instance_images([("../a.png", _image())], "sks")
    with pytest.raises(DatasetError, match="instance_prompt must not be empty"):
        load_instance_images([("a.png", _image())], "  ")
    with pytest.raises(DatasetError, match="holds no images"):
        load_instance_images([], "sks")
