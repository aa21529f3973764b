"""Any-modality preprocessing on real files from pydicom and nibabel: CT windows and their inverse, MR percentiles,
RGB / X-ray scaling, 3D orientation / spacing / ROI, 2D slices of volumes, channels, the parameter record, errors."""

from __future__ import annotations

import copy
import json
import re
import warnings
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import DataLoader, Dataset
from PIL import Image
from pydicom import examples
from pydicom.uid import generate_uid

from medvq.transforms import (
    CT_WINDOW,
    LoadMedicalImaged,
    MatchChannelsd,
    image_preprocessing,
    preprocessing_record,
    to_input_units,
)

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"
CT = examples.get_path("ct")  # CT_small.dcm, 128 x 128, RescaleSlope 1, RescaleIntercept -1024
MR = examples.get_path("mr")  # MR_small.dcm, 64 x 64
ANATOMICAL = str(NIBABEL_DATA / "anatomical.nii")  # T1 33 x 41 x 25, LAS, 2 mm
EXAMPLE_4D = str(NIBABEL_DATA / "example4d.nii.gz")


def ct_hu() -> np.ndarray:
    ds = pydicom.dcmread(CT)
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def write_ct_series(folder: Path, n: int = 4) -> Path:
    """CT_small as ``n`` single-frame DICOMs of one series, 5 mm apart (InstanceNumbers reversed)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = pydicom.dcmread(CT)
    uid = generate_uid()
    for k in range(n):
        ds = copy.deepcopy(base)
        ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.InstanceNumber = uid, generate_uid(), n - k
        position = [float(v) for v in base.ImagePositionPatient]
        ds.ImagePositionPatient = [position[0], position[1], position[2] + 5.0 * k]
        ds.save_as(folder / f"slice{k}.dcm")
    return folder


@contextmanager
def fails_in_pipeline(pattern: str):
    """A transform's error inside a MONAI ``Compose``: MONAI re-raises it as the cause of a RuntimeError."""
    with pytest.raises(RuntimeError, match="applying transform") as excinfo:
        yield
    assert re.search(pattern, str(excinfo.value.__cause__)), str(excinfo.value.__cause__)


# ------------------------------------------------------------------------------------------------------------- CT
def test_ct_slice_maps_hounsfield_window_to_unit_range_and_back():
    hu = ct_hu()  # -896 .. 1167 HU: the top end lies above the default window
    out = image_preprocessing(modality="ct", image_size=128, train=False)({"image": CT})
    image = out["image"]
    assert image.shape == (1, 128, 128) and image.dtype == torch.float32
    np.testing.assert_allclose(image[0].numpy(), np.clip(hu / 1000.0, -1, 1), atol=1e-6)  # [-1000, 1000] -> [-1, 1]
    assert out["image_intensity_range"].tolist() == list(CT_WINDOW)
    back = to_input_units(image, "ct")[0].numpy()
    inside = (hu > -1000) & (hu < 1000)
    np.testing.assert_allclose(back[inside], hu[inside], atol=1e-3)  # rescale slope / intercept applied on load
    assert back[hu >= 1000].min() == pytest.approx(1000.0)  # clipped values come back at the window's edge

    window = (-160.0, 240.0)  # a soft-tissue window
    narrow = image_preprocessing(modality="ct", image_size=128, window=window, train=False)({"image": CT})["image"]
    np.testing.assert_allclose(narrow[0].numpy(), np.clip((hu + 160) / 200 - 1, -1, 1), atol=1e-6)
    back = to_input_units(narrow, "ct", window=window)[0].numpy()
    inside = (hu > -160) & (hu < 240)
    np.testing.assert_allclose(back[inside], hu[inside], atol=1e-3)


def test_ct_without_rescale_tags_warns_and_reads_stored_values_as_hu(tmp_path):
    ds = pydicom.dcmread(CT)
    stored = ds.pixel_array.astype(np.float64)
    del ds.RescaleSlope, ds.RescaleIntercept
    ds.save_as(tmp_path / "bare.dcm")
    transform = image_preprocessing(modality="ct", image_size=128, train=False)
    with pytest.warns(UserWarning, match=r"bare\.dcm' lacks RescaleSlope.*read as Hounsfield units"):
        image = transform({"image": str(tmp_path / "bare.dcm")})["image"]
    np.testing.assert_allclose(to_input_units(image, "ct")[0].numpy(), np.clip(stored, -1000, 1000), atol=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a CT with its tags loads without the warning
        transform({"image": CT})


# ------------------------------------------------------------------------------------------------------------- MR
def test_mr_per_image_percentiles_and_inverse():
    pixels = pydicom.dcmread(MR).pixel_array.astype(np.float64)
    out = image_preprocessing(modality="mr", image_size=64, train=False)({"image": MR})
    image, low_high = out["image"], out["image_intensity_range"]
    np.testing.assert_allclose(low_high.numpy(), np.percentile(pixels, [0.5, 99.5]), rtol=1e-5)
    assert float(image.min()) == -1.0 and float(image.max()) == 1.0
    low, high = low_high.tolist()
    np.testing.assert_allclose(image[0].numpy(), np.clip((pixels - low) / (high - low) * 2 - 1, -1, 1), atol=1e-5)
    back = to_input_units(image, "mr", intensity_range=low_high)[0].numpy()
    inside = (pixels > low) & (pixels < high)
    np.testing.assert_allclose(back[inside], pixels[inside], rtol=1e-5)
    with pytest.raises(ValueError, match="'mr' needs intensity_range"):
        to_input_units(image, "mr")

    custom = image_preprocessing(modality="mr", percentiles=(5, 95), image_size=64, train=False)({"image": MR})
    np.testing.assert_allclose(custom["image_intensity_range"].numpy(), np.percentile(pixels, [5, 95]), rtol=1e-5)


def test_mr_slices_are_scaled_by_their_volume_percentiles_and_cut_in_ras():
    volume = nib.as_closest_canonical(nib.load(ANATOMICAL)).get_fdata()  # RAS: (33, 41, 25)
    low, high = np.percentile(volume, [0.5, 99.5])
    transform = image_preprocessing(modality="mr", image_size=41, train=False)
    out = transform({"image": ANATOMICAL, "slice_index": 12, "slice_axis": 2})
    image = out["image"]  # (1, 41, 41): the 33 x 41 axial slice, padded by 4 rows on each side
    assert image.shape == (1, 41, 41)
    np.testing.assert_allclose(out["image_intensity_range"].numpy(), [low, high], rtol=1e-4)
    expected = np.clip((volume[:, :, 12] - low) / (high - low) * 2 - 1, -1, 1)
    np.testing.assert_allclose(image[0, 4:37].numpy(), expected, atol=1e-4)
    assert float(image[0, :4].max()) == float(image[0, 37:].max()) == -1.0  # the padding is the bottom of the range
    sagittal = transform({"image": ANATOMICAL, "slice_index": 0, "slice_axis": 0})["image"]  # the most left slice
    np.testing.assert_allclose(sagittal[0, :, 8:33].numpy(), np.clip((volume[0] - low) / (high - low) * 2 - 1, -1, 1),
                               atol=1e-4)
    with fails_in_pipeline("slice 25 along axis 2 is outside"):
        transform({"image": ANATOMICAL, "slice_index": 25, "slice_axis": 2})


# ------------------------------------------------------------------------------------------------------------- 3D
@pytest.mark.parametrize("train", [False, True])
def test_3d_volume_is_ras_resampled_and_cropped_to_the_roi(train):
    transform = image_preprocessing(modality="mr", spatial_dims=3, roi_size=(24, 32, 16), pixdim=3.0, train=train,
                                    flip_prob=0.0)
    image = transform({"image": ANATOMICAL})["image"]  # LAS 2 mm on file
    assert image.shape == (1, 24, 32, 16)
    assert nib.aff2axcodes(image.affine.numpy()) == ("R", "A", "S")
    np.testing.assert_allclose(np.linalg.norm(image.affine.numpy()[:3, :3], axis=0), [3.0, 3.0, 3.0], rtol=1e-5)
    assert float(image.min()) >= -1 and float(image.max()) <= 1


def test_3d_dicom_series_is_ras_and_padded_with_minus_one(tmp_path):
    folder = write_ct_series(tmp_path / "series", n=4)
    image = image_preprocessing(modality="ct", spatial_dims=3, roi_size=(64, 64, 8), train=False)({"image": str(folder)})
    image = image["image"]
    assert image.shape == (1, 64, 64, 8) and nib.aff2axcodes(image.affine.numpy()) == ("R", "A", "S")
    assert float(image[..., :2].max()) == float(image[..., -2:].max()) == -1.0  # 4 slices padded to 8 with air


def test_pipeline_rejects_images_that_do_not_fit_spatial_dims():
    with fails_in_pipeline(r"anatomical\.nii.*does not fit spatial_dims=2.*build_image_datalist"):
        image_preprocessing(modality="mr", image_size=32, train=False)({"image": ANATOMICAL})
    with fails_in_pipeline(r"CT_small\.dcm.*does not fit spatial_dims=3"):
        image_preprocessing(modality="ct", spatial_dims=3, roi_size=16, train=False)({"image": CT})
    with fails_in_pipeline(r"4-D NIfTI of shape \(128, 96, 24, 2\).*four_to_three"):
        image_preprocessing(modality="mr", spatial_dims=3, roi_size=16, train=False)({"image": EXAMPLE_4D})


# ------------------------------------------------------------------------------------------------ RGB, X-ray, channels
def test_rgb_and_xray_are_divided_by_255_with_aspect_kept(tmp_path):
    rgb = pydicom.dcmread(examples.get_path("rgb_color")).pixel_array  # (240, 320, 3) ultrasound
    Image.fromarray(rgb).save(tmp_path / "us.png")
    image = image_preprocessing(modality="rgb", image_size=320, train=False)({"image": str(tmp_path / "us.png")})["image"]
    assert image.shape == (3, 320, 320)
    np.testing.assert_allclose(image[:, 40:280].numpy(), np.moveaxis(rgb, -1, 0) / 127.5 - 1, atol=1e-6)
    assert float(image[:, :40].max()) == -1.0
    from_dicom = image_preprocessing(modality="rgb", image_size=320, train=False)(
        {"image": examples.get_path("rgb_color")})["image"]
    np.testing.assert_allclose(from_dicom.numpy(), image.numpy(), atol=1e-6)  # the DICOM reads as its PNG does

    gray = np.clip((ct_hu() + 1000) / 2000 * 255, 0, 255).astype(np.uint8)
    Image.fromarray(gray).save(tmp_path / "xray.jpg", quality=100)
    out = image_preprocessing(modality="xray", image_size=64, train=False)({"image": str(tmp_path / "xray.jpg")})
    assert out["image"].shape == (1, 64, 64) and out["image_intensity_range"].tolist() == [0.0, 255.0]
    decoded = np.asarray(Image.open(tmp_path / "xray.jpg"), np.float64)
    assert abs(float(to_input_units(out["image"], "xray").mean()) - decoded.mean()) < 1.0  # the mean survives a resize


def test_channels_are_converted_on_request(tmp_path):
    rgb = pydicom.dcmread(examples.get_path("rgb_color")).pixel_array
    Image.fromarray(rgb).save(tmp_path / "us.png")
    gray = image_preprocessing(modality="rgb", image_size=32, channels=1, train=False)({"image": str(tmp_path / "us.png")})
    assert gray["image"].shape == (1, 32, 32)
    colour = image_preprocessing(modality="ct", image_size=32, channels=3, train=False)({"image": CT})["image"]
    assert colour.shape == (3, 32, 32) and torch.equal(colour[0], colour[2])
    luma = MatchChannelsd("image", channels=1)({"image": torch.tensor([[[255.0]], [[0.0]], [[0.0]]])})["image"]
    assert luma.shape == (1, 1, 1) and float(luma) == pytest.approx(0.299 * 255)
    with pytest.raises(ValueError, match="only 1 and 3 convert"):
        MatchChannelsd("image", channels=3)({"image": torch.zeros(2, 4, 4)})
    assert LoadMedicalImaged("image")({"image": str(tmp_path / "us.png")})["image"].shape == (3, 240, 320)


# ------------------------------------------------------------------------------------------------ record, inverse, errors
def test_record_is_json_and_names_every_parameter():
    record = preprocessing_record(modality="ct", spatial_dims=3, roi_size=(64, 64, 32), pixdim=1.5)
    assert json.loads(json.dumps(record)) == record
    assert record["intensity"] == {"method": "window", "window": [-1000.0, 1000.0], "units": "Hounsfield units",
                                   "output_range": [-1.0, 1.0], "clip": True, "range_key": "<key>_intensity_range"}
    assert record["roi_size"] == [64, 64, 32] and record["pixdim"] == [1.5, 1.5, 1.5] and record["orientation"] == "RAS"
    mr = preprocessing_record(modality="mr", image_size=128, channels=1)
    assert mr["intensity"]["percentiles"] == [0.5, 99.5] and mr["image_size"] == 128 and mr["channels"] == 1
    assert "roi_size" not in mr and "image_size" not in record


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"modality": "pet"}, "modality must be one of"),
        ({"spatial_dims": 4}, "spatial_dims must be 2 or 3"),
        ({"image_size": 4}, "image_size must be an integer >= 8"),
        ({"spatial_dims": 3, "roi_size": (32, 32)}, "roi_size must be"),
        ({"spatial_dims": 3, "pixdim": (1.0, -1.0, 1.0)}, "pixdim must be"),
        ({"modality": "mr", "window": (0, 1)}, "'mr' is scaled by percentiles"),
        ({"modality": "ct", "percentiles": (1, 99)}, "percentiles apply to modality 'mr'"),
        ({"modality": "mr", "percentiles": (99, 1)}, "percentiles must be two numbers"),
        ({"window": (100, 100)}, "window must be two numbers"),
        ({"channels": 2}, "channels must be None, 1 or 3"),
        ({"flip_prob": 2.0}, "flip_prob must be"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        image_preprocessing(**kwargs)


def test_one_batch_mixes_formats_and_to_input_units_uses_each_images_range(tmp_path):
    pixels = pydicom.dcmread(MR).pixel_array
    Image.fromarray((pixels / pixels.max() * 255).astype(np.uint8)).save(tmp_path / "mr.png")
    items = [  # a DICOM, a PNG and a NIfTI slice: different readers, different metadata
        {"image": MR, "label": 0},
        {"image": str(tmp_path / "mr.png"), "label": 1},
        {"image": ANATOMICAL, "slice_index": 3, "slice_axis": 2, "label": 1},
    ]
    loader = DataLoader(Dataset(items, image_preprocessing(modality="mr", image_size=16, train=False)), batch_size=3)
    batch = next(iter(loader))
    assert batch["image"].shape == (3, 1, 16, 16) and batch["label"].tolist() == [0, 1, 1]
    assert batch["image"].affine.shape == (3, 3, 3) and batch["image_intensity_range"].shape == (3, 2)
    restored = to_input_units(batch["image"], "mr", intensity_range=batch["image_intensity_range"])
    assert float(restored[2].max()) <= float(batch["image_intensity_range"][2, 1]) + 1e-3
    assert float(restored[0].max()) < 3000 < float(restored[2].max())  # MR_small's scale, anatomical.nii's scale

    volumes = [{"image": str(write_ct_series(tmp_path / "series"))}, {"image": ANATOMICAL}]
    transform = image_preprocessing(modality="ct", spatial_dims=3, roi_size=16, train=False)
    batch = next(iter(DataLoader(Dataset(volumes, transform), batch_size=2)))  # a DICOM series and a NIfTI
    assert batch["image"].shape == (2, 1, 16, 16, 16) and batch["image"].affine.shape == (2, 4, 4)


def test_to_input_units_broadcasts_batch_ranges():
    ranges = torch.tensor([[0.0, 10.0], [100.0, 300.0]])
    x = torch.zeros(2, 1, 4, 4)
    back = to_input_units(x, "mr", intensity_range=ranges)
    assert back[0].unique().tolist() == [5.0] and back[1].unique().tolist() == [200.0]
    assert to_input_units(torch.tensor([-1.0, 1.0, 2.0]), "rgb").tolist() == [0.0, 255.0, 255.0]
    assert to_input_units(torch.tensor([2.0]), "rgb", clip=False).tolist() == [382.5]
    with pytest.raises(ValueError, match=r"shape \(2,\) or \(B, 2\)"):
        to_input_units(x, "mr", intensity_range=torch.zeros(3, 2))
