"""Synthetic fundus images: deterministic, fundus-like on disk, usable through the fundus pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader
from PIL import Image

from medvq.data import CLASSES, build_folder_datalist, make_fundus_dataset, split_datalist
from medvq.transforms import fundus_preprocessing, make_dataset


def _pixels(items: list[dict]) -> list[np.ndarray]:
    return [np.asarray(Image.open(item["image"])) for item in items]


def test_items_and_images_look_like_a_fundus_datalist(tmp_path):
    items = make_fundus_dataset(tmp_path, num_images=8, image_size=48, seed=0)
    assert len(items) == 8
    assert [(i["patient_id"], i["eye"]) for i in items[:4]] == [(0, "left"), (0, "right"), (1, "left"), (1, "right")]
    for item, image in zip(items, _pixels(items)):
        assert item["image"].endswith(".png") and set(item) == {"image", "patient_id", "eye", "label", "keywords"}
        assert len(item["label"]) == len(CLASSES) and set(item["label"]) <= {0.0, 1.0} and sum(item["label"]) >= 1
        assert item["keywords"]
        assert image.shape == (48, 48, 3) and image.dtype == np.uint8
        assert image[0, 0].max() == 0 and image[-1, -1].max() == 0  # black outside the field of view
        centre = image[18:30, 18:30].astype(float)
        assert centre[..., 0].mean() > 60 and centre[..., 0].mean() > centre[..., 2].mean()  # a reddish retina


def test_deterministic_for_a_seed_and_independent_of_num_images(tmp_path):
    first = make_fundus_dataset(tmp_path / "a", num_images=6, image_size=32, seed=1)
    again = make_fundus_dataset(tmp_path / "b", num_images=6, image_size=32, seed=1)
    prefix = make_fundus_dataset(tmp_path / "c", num_images=3, image_size=32, seed=1)
    other = make_fundus_dataset(tmp_path / "d", num_images=6, image_size=32, seed=2)
    assert [i["label"] for i in first] == [i["label"] for i in again]
    for x, y in zip(_pixels(first), _pixels(again)):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(_pixels(first), _pixels(prefix)):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(_pixels(first), _pixels(other)))
    # procedural drawings (patients 0, 2) and retina views (patient 1) both appear
    assert not np.array_equal(_pixels(first)[0], _pixels(first)[2])


def test_jpeg_output(tmp_path):
    items = make_fundus_dataset(tmp_path, num_images=2, image_size=32, image_format="jpg")
    assert all(i["image"].endswith(".jpg") for i in items)
    assert Image.open(items[0]["image"]).format == "JPEG"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_images": 0}, "num_images must be an integer >= 1"),
        ({"image_size": 8}, "image_size must be an integer >= 16"),
        ({"image_size": 32.0}, "image_size must be an integer >= 16"),
        ({"image_format": "bmp"}, "image_format must be one of"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_fundus_dataset(tmp_path, **kwargs)


def test_loads_through_the_cached_fundus_pipeline(tmp_path):
    items = make_fundus_dataset(tmp_path / "images", num_images=8, image_size=48, seed=0)
    split = split_datalist(items, val_fraction=0.25, seed=0)
    assert len(split.val) == 2 and len(split.train) == 6
    dataset = make_dataset(split.train, fundus_preprocessing(image_size=32, train=True), cache_dir=tmp_path / "cache")
    batch = next(iter(DataLoader(dataset, batch_size=3)))
    assert batch["image"].shape == (3, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1
    assert batch["label"].shape == (3, len(CLASSES)) and batch["label"].dtype == torch.float32
    torch.testing.assert_close(batch["label"][0], torch.tensor(split.train[0]["label"]))


def test_folder_datalist_lists_images_and_reports_the_rest(tmp_path, caplog):
    items = make_fundus_dataset(tmp_path / "images", num_images=3, image_size=16)
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    (tmp_path / "images" / "sub").mkdir()
    (tmp_path / "images" / "sub" / "scan.nii.gz").write_bytes(b"")
    with caplog.at_level("WARNING", logger="medvq.data.folders"):
        listed = build_folder_datalist(tmp_path / "images")
    assert [i["image"] for i in listed] == sorted(
        [i["image"] for i in items] + [str(tmp_path / "images/sub/scan.nii.gz")]
    )
    assert "1 file(s) not listed" in caplog.text and "notes.txt" in caplog.text
    assert len(build_folder_datalist(tmp_path / "images", recursive=False)) == 3
    with pytest.raises(FileNotFoundError, match="image folder .* does not exist"):
        build_folder_datalist(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"no file ending in \['.dcm'\]"):
        build_folder_datalist(tmp_path / "images", extensions=[".dcm"])
    with pytest.raises(ValueError, match="extensions must be a non-empty sequence"):
        build_folder_datalist(tmp_path / "images", extensions="png")
