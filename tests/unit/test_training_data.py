"""The training data order and image preprocessing, both pure and the same on every worker."""

import io

import pytest
from PIL import Image

from imagefleet.training.dataset import load_instance_images
from imagefleet.worker.training.data import batch_indices, image_tensor


def test_each_epoch_visits_every_item_once_in_a_seeded_order() -> None:
    order = batch_indices(seed=1, first_sample=0, batch_size=30, count=10, stream="instance")
    epochs = [order[0:10], order[10:20], order[20:30]]
    assert all(sorted(epoch) == list(range(10)) for epoch in epochs)
    assert epochs[0] != epochs[1]
    assert order == batch_indices(1, 0, 30, 10, "instance")
    assert order != batch_indices(2, 0, 30, 10, "instance")
    assert order != batch_indices(1, 0, 30, 10, "class")


def test_the_order_continues_from_any_position_as_if_never_interrupted() -> None:
    whole = batch_indices(7, 0, 24, 5, "instance")
    pieces = [batch_indices(7, start, 3, 5, "instance") for start in range(0, 24, 3)]
    assert [index for piece in pieces for index in piece] == whole


def test_the_order_is_pinned_so_workers_with_other_library_versions_agree() -> None:
    assert batch_indices(0, 0, 5, 5, "instance") == [0, 3, 2, 1, 4]


def test_an_empty_dataset_has_no_order() -> None:
    with pytest.raises(ValueError, match="empty dataset"):
        batch_indices(0, 0, 1, 0, "instance")


def _item(size: tuple[int, int], orientation: int | None = None):  # type: ignore[no-untyped-def]
    image = Image.new("RGB", size, (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, size[0] // 2, size[1]))  # left half blue
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(buffer, "JPEG", exif=exif, quality=95)
    return load_instance_images([("a.jpg", buffer.getvalue())], "x").items[0]


def test_images_are_resized_on_the_short_side_and_center_cropped_into_minus_one_to_one() -> None:
    tensor = image_tensor(_item((64, 32)), 16)
    assert tuple(tensor.shape) == (3, 16, 16)
    assert tensor.min() >= -1.0 and tensor.max() <= 1.0
    # The crop keeps the centre: the left quarter of the original is gone, the rest remains.
    assert tensor[2, 8, 0] > 0.5 and tensor[0, 8, 15] > 0.5


def test_exif_rotation_is_applied_before_cropping() -> None:
    upright = image_tensor(_item((64, 32)), 16)
    rotated = image_tensor(_item((64, 32), orientation=6), 16)  # stored sideways
    assert not bool((upright - rotated).abs().max() < 0.1)
