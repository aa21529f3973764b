"""Fundus transforms: hand-made crops / pads / masks, orientation, the full pipeline on a real fundus photo, caching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import CacheDataset, MetaTensor, PersistentDataset
from PIL import Image

from medvq.transforms import CircularMaskd, FundusBorderCropd, SquarePadd, fundus_preprocessing, make_dataset


@pytest.fixture(scope="module")
def retina_jpeg(tmp_path_factory) -> str:
    """``skimage.data.retina()`` (a real fundus photograph, 1411 x 1411) saved as JPEG, shrunk to keep tests fast."""
    from skimage import data

    path = tmp_path_factory.mktemp("retina") / "retina.jpg"
    Image.fromarray(data.retina()).resize((352, 352), Image.Resampling.BILINEAR).save(path, quality=90)
    return str(path)


def asymmetric_image(path: Path) -> np.ndarray:
    """A 40 x 80 (H x W) RGB photo-like image: black border, grey field, a white marker in the top-left corner of
    the field and a red one in its bottom-right. Returns the (H, W, 3) array it wrote."""
    array = np.zeros((40, 80, 3), np.uint8)
    array[4:36, 6:74] = 120
    array[4:12, 6:20] = 255  # top-left marker, white
    array[28:36, 60:74] = (255, 0, 0)  # bottom-right marker, red
    Image.fromarray(array).save(path)
    return array


# ------------------------------------------------------------------------------------------------ FundusBorderCropd
@pytest.mark.parametrize("as_tensor", [True, False])
def test_border_crop_by_hand(as_tensor):
    img = np.zeros((3, 20, 30), np.float32)
    img[0, 5:12, 8:25] = 60  # channel mean 20 > 10: foreground
    img[0, 15, 2] = 25  # channel mean 8.3 <= 10: JPEG noise in the border, ignored
    data = {"image": torch.as_tensor(img) if as_tensor else img}
    out = FundusBorderCropd("image", threshold=10)(data)["image"]
    assert tuple(out.shape) == (3, 7, 17)
    np.testing.assert_array_equal(np.asarray(out), img[:, 5:12, 8:25])
    with_margin = FundusBorderCropd("image", threshold=10, margin=2)(data)["image"]
    assert tuple(with_margin.shape) == (3, 11, 21)


def test_border_crop_of_a_black_image_names_the_file():
    black = MetaTensor(torch.zeros(3, 8, 8), meta={"filename_or_obj": "/data/odir/17_left.jpg"})
    with pytest.raises(ValueError, match=r"image '/data/odir/17_left.jpg' has no pixel whose channel mean exceeds 10"):
        FundusBorderCropd("image")({"image": black})
    with pytest.raises(ValueError, match="image under key 'image' has no pixel"):
        FundusBorderCropd("image")({"image": torch.full((3, 8, 8), 0.9)})  # scaled to [0, 1]: below 10


def test_transforms_reject_bad_arguments_and_shapes():
    with pytest.raises(ValueError, match="threshold must be a number >= 0"):
        FundusBorderCropd("image", threshold=-1)
    with pytest.raises(ValueError, match="margin must be an integer >= 0"):
        FundusBorderCropd("image", margin=1.5)
    with pytest.raises(ValueError, match="margin must be a number >= 0"):
        CircularMaskd("image", margin=-1)
    with pytest.raises(ValueError, match=r"must be channel-first \(C, H, W\), got shape \(8, 8\)"):
        SquarePadd("image")({"image": torch.ones(8, 8)})
    with pytest.raises(ValueError, match="must have 2 spatial dims"):
        CircularMaskd("image")({"image": torch.ones(1, 4, 4, 4)})
    with pytest.raises(ValueError, match="too small for margin 3"):
        CircularMaskd("image", margin=3)({"image": torch.ones(1, 6, 6)})
    with pytest.raises(ValueError, match="image_size must be an integer >= 8"):
        fundus_preprocessing(image_size=4)
    with pytest.raises(ValueError, match="flip_prob must be a number in"):
        fundus_preprocessing(flip_prob=2)
    with pytest.raises(ValueError, match="cache_rate must be a number in"):
        make_dataset([], fundus_preprocessing(), cache_rate=1.5)


# ------------------------------------------------------------------------------------------- SquarePadd, CircularMaskd
def test_square_pad_centres_with_zeros():
    out = SquarePadd("image")({"image": torch.ones(2, 4, 6)})["image"]
    assert tuple(out.shape) == (2, 6, 6)
    assert out[:, [0, 5]].sum() == 0 and out[:, 1:5].min() == 1
    odd = SquarePadd("image")({"image": np.ones((1, 3, 6), np.float32)})["image"]
    assert odd[0, :, 0].tolist() == [0, 1, 1, 1, 0, 0]  # the extra row goes at the end
    cube = SquarePadd("image")({"image": torch.ones(1, 2, 4, 3)})["image"]
    assert tuple(cube.shape) == (1, 4, 4, 4)


def test_circular_mask_by_hand():
    out = CircularMaskd("image")({"image": torch.ones(3, 8, 8)})["image"]
    # radius 4, pixel centres at +-0.5 ... +-3.5: inside when x^2 + y^2 <= 16; per quadrant the row counts 4, 4, 3, 2
    assert out[0].sum() == 4 * (4 + 4 + 3 + 2)
    assert out[:, 0, 0].sum() == 0 and out[:, 3, 3].min() == 1 and out[:, 0, 3].min() == 1
    torch.testing.assert_close(out[0], out[1])
    rect = CircularMaskd("image", margin=1)({"image": np.ones((1, 6, 10), np.float32)})["image"]
    assert isinstance(rect, np.ndarray) and rect[0, 3, 0] == 0 and rect[0, 3, 5] == 1 and rect[0, 0, 5] == 0
    meta = MetaTensor(torch.ones(1, 4, 4), meta={"filename_or_obj": "x.png"})
    assert CircularMaskd("image")({"image": meta})["image"].meta["filename_or_obj"] == "x.png"


# ------------------------------------------------------------------------------------------------ full pipeline
def test_pipeline_on_a_real_fundus_photograph(retina_jpeg):
    out = fundus_preprocessing(image_size=64, train=False)({"image": retina_jpeg, "label": [0.0, 1.0] + [0.0] * 6})
    image = out["image"]
    assert tuple(image.shape) == (3, 64, 64) and image.dtype == torch.float32
    assert image.min() >= -1 and image.max() <= 1
    assert image.meta["filename_or_obj"] == retina_jpeg
    for corner in (image[:, 0, 0], image[:, 0, -1], image[:, -1, 0], image[:, -1, -1]):
        torch.testing.assert_close(corner, torch.full((3,), -1.0))  # masked outside the field of view
    assert image[0, 24:40, 24:40].mean() > -0.5  # the retina is bright in red
    assert isinstance(out["label"], torch.Tensor) and out["label"].tolist() == [0.0, 1.0] + [0.0] * 6


def test_pipeline_does_not_transpose(tmp_path):
    array = asymmetric_image(tmp_path / "asym.png")
    pipeline = fundus_preprocessing(image_size=16, train=False, label_key=None)
    loaded = pipeline.transforms[0]({"image": str(tmp_path / "asym.png")})["image"]
    np.testing.assert_array_equal(loaded.numpy(), array.transpose(2, 0, 1))  # (C, H, W) exactly as PIL's (H, W, C)
    image = pipeline({"image": str(tmp_path / "asym.png")})["image"]
    # the 32 x 68 (H x W) field is padded to 68 x 68 (rows 18..49) and shrunk to 16 x 16 (rows 4.2..11.8)
    assert image[:, :4].max() == -1 and image[:, 12:].max() == -1  # black bands above and below the field
    assert image[:, 7, 7:9].min() > -0.1  # the grey field fills the middle row from side to side
    assert image[:, 5, 2].min() > 0.9  # white marker: top-left of the field
    assert image[0, 10, 13] > 0.9 and image[1:, 10, 13].max() < -0.9  # red marker: bottom-right of the field
    flipped = fundus_preprocessing(image_size=16, train=True, flip_prob=1.0, label_key=None)(
        {"image": str(tmp_path / "asym.png")}
    )
    torch.testing.assert_close(flipped["image"].as_tensor(), image.flip(-1).as_tensor())  # train flips left-right


def test_rgba_and_grayscale_inputs_become_rgb(tmp_path):
    gray = np.zeros((20, 20), np.uint8)
    gray[4:16, 4:16] = 200
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([gray] * 3 + [np.full_like(gray, 255)])).save(tmp_path / "rgba.png")
    pipeline = fundus_preprocessing(image_size=8, train=False)
    for name in ("gray.png", "rgba.png"):
        assert tuple(pipeline({"image": str(tmp_path / name)})["image"].shape) == (3, 8, 8)


# ------------------------------------------------------------------------------------------------ caching
def test_cached_and_fresh_items_of_the_persistent_cache_batch_together(tmp_path):
    """A batch mixing an item read from the cache with one computed afresh (seen for the first time: drop_last left
    it out of an epoch, the deferred switch's pass) collates: MONAI's PersistentDataset returned the fresh one with
    its 2D metadata (3x3 affine) and the cached one without (a 4x4 default after the random flip)."""
    import pydicom.data
    from monai.data import DataLoader

    from medvq.transforms import tokenizer_preprocessing

    items = [{"image": pydicom.data.get_testdata_file(name)} for name in ("CT_small.dcm", "693_J2KI.dcm")]
    pipeline = tokenizer_preprocessing("image", modality="ct", spatial_dims=2, image_size=32, train=True, channels=1,
                                       label_key=None)
    dataset = make_dataset(items, pipeline, cache_dir=tmp_path / "cache")
    cached = dataset[0]["image"]  # now on disk: the next read of item 0 is a cache hit, item 1 is still a miss
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    (batch,) = DataLoader(dataset, batch_size=2, shuffle=False)
    assert tuple(batch["image"].shape) == (2, 1, 32, 32)
    assert type(dataset[1]["image"]) is type(cached)  # both paths give the same kind of item


def test_persistent_cache_keys_include_the_transforms(tmp_path, retina_jpeg):
    items = [{"image": retina_jpeg, "label": [1.0] + [0.0] * 7}]
    cache = tmp_path / "cache"
    ds32 = make_dataset(items, fundus_preprocessing(image_size=32, train=False), cache_dir=cache)
    assert isinstance(ds32, PersistentDataset)
    first = ds32[0]["image"]
    assert len(list(cache.glob("*.pt"))) == 1
    torch.testing.assert_close(
        make_dataset(items, fundus_preprocessing(image_size=32, train=False), cache_dir=cache)[0]["image"], first
    )
    assert len(list(cache.glob("*.pt"))) == 1  # the second dataset read the cache
    assert tuple(
        make_dataset(items, fundus_preprocessing(image_size=16, train=False), cache_dir=cache)[0]["image"].shape
    ) == (3, 16, 16)
    assert len(list(cache.glob("*.pt"))) == 2  # a new size, a new cache entry: never a stale image

    memory = make_dataset(items, fundus_preprocessing(image_size=32, train=False), progress=False)
    assert isinstance(memory, CacheDataset) and not isinstance(memory, PersistentDataset)
    torch.testing.assert_close(memory[0]["image"].as_tensor(), first)
