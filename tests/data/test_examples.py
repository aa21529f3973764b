"""The example CT / MR dataset built from images that ship in pydicom, nibabel and matplotlib: what
build_image_datalist reads of it (2D and 3D), real units, the DICOM series, determinism, idempotency and the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from monai.transforms import Orientation
from pydicom import examples

from medvq.data import build_image_datalist
from medvq.data.examples import CT_RANGE, EXAMPLE_CLASSES, main, make_example_dataset
from medvq.transforms import LoadMedicalImaged

ANATOMICAL = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
VARIANTS_2D, VARIANTS_3D = 4, 2


def digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset_2d(tmp_path_factory):
    root = tmp_path_factory.mktemp("examples") / "ex2d"
    return root, make_example_dataset(root, num_variants=VARIANTS_2D)


@pytest.fixture(scope="module")
def dataset_3d(tmp_path_factory):
    root = tmp_path_factory.mktemp("examples") / "ex3d"
    return root, make_example_dataset(root, spatial_dims=3, num_variants=VARIANTS_3D)


@pytest.fixture(scope="module")
def loader():
    return LoadMedicalImaged("image")


def test_2d_dataset_reads_as_two_classes_without_skips(dataset_2d, loader):
    root, info = dataset_2d
    assert info["created"] and info["class_names"] == ["ct", "mr"] and info["image_format"] == "dicom"
    # 3 real CT slices; MR: 3 real 2-D images + 6 slices of each of 3 volumes (anatomical, example4d t0 and t1)
    assert info["real"] == {"ct": 3, "mr": 21}
    assert info["counts"] == {"ct": 3 + VARIANTS_2D, "mr": 21 + VARIANTS_2D}

    result = build_image_datalist(root, spatial_dims=2, group_by="file", val_fraction=0.2)
    items = result.train + result.val
    assert result.skipped == [] and result.class_names == ["ct", "mr"] and result.channels == 1
    assert len(items) == sum(info["counts"].values())
    for item in items:
        assert "slice_index" not in item  # every file is a 2-D image (each DICOM its own series)
        assert EXAMPLE_CLASSES[item["label"]] == Path(item["image"]).parent.name

    # real units: CT in HU through the rescale tags (air at -1024), MR positive
    for item in items:
        image = loader({"image": item["image"]})["image"]
        low, high = float(image.min()), float(image.max())
        if item["label"] == 0:
            assert CT_RANGE[0] <= low < -800 and 500 < high <= CT_RANGE[1]  # air (CT_small's crop: -896)
            assert image.meta["rescale_intercept"] == -1024 and image.meta["dicom_modality"] == "CT"
        else:
            assert 0 <= low < high and image.meta["dicom_modality"] == "MR"

    # the real CT slice is kept as it is (HU), its variants moved
    ct = pydicom.dcmread(examples.get_path("ct"))
    hu = ct.pixel_array * float(ct.RescaleSlope) + float(ct.RescaleIntercept)
    assert np.array_equal(loader({"image": str(root / "ct" / "CT_small.dcm")})["image"][0].numpy(), hu)
    assert not np.array_equal(loader({"image": str(root / "ct" / "CT_small_v000.dcm")})["image"][0].numpy(), hu)


def test_2d_datalist_groups_a_source_with_its_variants(dataset_2d):
    root, info = dataset_2d
    saved = json.loads((root / "examples_datalist.json").read_text())
    assert saved["labels"] == {"0": "ct", "1": "mr"} and len(saved["training"]) == len(info["items"])
    result = build_image_datalist(datalist=root / "examples_datalist.json", spatial_dims=2, group_by="patient_id",
                                  val_fraction=0.3)
    assert result.skipped == [] and len(result.val) > 0
    assert {i["group"] for i in result.train}.isdisjoint({i["group"] for i in result.val})
    assert {i["group"] for i in result.train + result.val} >= {"patient:medvq-CT_small", "patient:medvq-anatomical"}

    provenance = json.loads((root / "provenance.json").read_text())
    assert {r["name"] for r in provenance["sources"]} == set(info["sources"])
    assert all(len(r["sha256"]) == 64 and r["licence"] for r in provenance["sources"])
    variant = next(i for i in provenance["items"] if i["kind"] == "variant")
    assert set(variant["augmentation"]) >= {"rotate_deg", "zoom", "shift_fraction", "mirror"}
    readme = (root / "README.txt").read_text()
    assert all(r["sha256"] in readme and r["file"] in readme for r in provenance["sources"])
    assert sorted(p.name for p in (root / "licenses").iterdir()) == [
        "matplotlib-LICENSE.txt", "nibabel-COPYING.txt", "pydicom-LICENSE.txt"]


def test_3d_dataset_volumes_series_and_units(dataset_3d, loader):
    root, info = dataset_3d
    assert info["real"] == {"ct": 3, "mr": 3} and info["counts"] == {"ct": 3 + VARIANTS_3D, "mr": 3 + VARIANTS_3D}
    result = build_image_datalist(root, spatial_dims=3, group_by="file")
    items = result.train + result.val
    assert result.skipped == [] and result.class_names == ["ct", "mr"] and len(items) == 6 + 2 * VARIANTS_3D
    series = sorted(Path(i["image"]).relative_to(root).as_posix() for i in items if Path(i["image"]).is_dir())
    assert series == ["ct/CT_small", "mr/anatomical"]  # each DICOM series folder is one volume, labelled by its parent
    assert len(list((root / "mr" / "anatomical").glob("*.dcm"))) == 25
    assert len(list((root / "ct" / "CT_small").glob("*.dcm"))) == 15

    # the MR series is anatomical.nii slice by slice: same values and the same RAS geometry
    mr = Orientation(axcodes="RAS", labels=None)(loader({"image": str(root / "mr" / "anatomical")})["image"])
    reference = nib.as_closest_canonical(nib.load(ANATOMICAL))
    assert tuple(mr.shape) == (1, 33, 41, 25)
    assert np.array_equal(mr[0].numpy(), np.maximum(np.asanyarray(reference.dataobj), 0))
    np.testing.assert_allclose(mr.affine.numpy(), reference.affine, atol=1e-3)

    # the CT pseudo-volume: the real slice (in HU) in the middle, 5 mm slices
    ct = loader({"image": str(root / "ct" / "CT_small")})["image"]
    source = pydicom.dcmread(examples.get_path("ct"))
    hu = source.pixel_array * float(source.RescaleSlope) + float(source.RescaleIntercept)
    assert tuple(ct.shape) == (1, 128, 128, 15) and np.array_equal(ct[0, :, :, 7].numpy(), hu)
    assert float(np.linalg.norm(ct.affine.numpy()[:3, 2])) == pytest.approx(5.0)

    for item in items:
        image = loader({"image": item["image"]})["image"]
        assert image.ndim == 4
        if item["label"] == 0:
            assert CT_RANGE[0] <= float(image.min()) < -800 and 500 < float(image.max()) <= CT_RANGE[1]
        else:
            assert float(image.min()) >= 0 and float(image.max()) > 100
    for path in root.rglob("*.nii.gz"):
        img = nib.load(path)
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S") and img.header.get_sform(coded=True)[1] == 1


def test_same_seed_same_bytes_other_seed_other_variants(tmp_path, dataset_2d):
    root, _ = dataset_2d
    again = make_example_dataset(tmp_path / "again", num_variants=VARIANTS_2D)
    assert again["created"] and digest(tmp_path / "again") == digest(root)
    make_example_dataset(tmp_path / "seed1", num_variants=VARIANTS_2D, seed=1)
    first, other = digest(root), digest(tmp_path / "seed1")
    changed = {name for name in first if first[name] != other.get(name)}
    variants = {name for name in first if "_v0" in name}
    assert variants <= changed  # every variant differs; the real images do not depend on the seed
    assert not any(name.endswith(".dcm") for name in changed - variants)


def test_rerun_is_a_no_op_and_other_settings_are_an_error(tmp_path):
    root = tmp_path / "ex"
    first = make_example_dataset(root, spatial_dims=3, num_variants=0)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    second = make_example_dataset(root, spatial_dims=3, num_variants=0)
    assert not second["created"] and second["counts"] == first["counts"] == {"ct": 3, "mr": 3}
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
    with pytest.raises(ValueError, match=r"other settings \(num_variants: 0 there, 1 now\)"):
        make_example_dataset(root, spatial_dims=3, num_variants=1)
    (root / "mr" / "example4d_t0.nii.gz").unlink()
    with pytest.raises(ValueError, match="incomplete.*example4d_t0"):
        make_example_dataset(root, spatial_dims=3, num_variants=0)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and holds no provenance.json"):
        make_example_dataset(foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    assert not list(tmp_path.glob(".*partial*"))  # nothing left behind


def test_png_format(tmp_path):
    info = make_example_dataset(tmp_path / "png", image_format="png", num_variants=1, slices_per_volume=1,
                                max_size=64)
    assert info["counts"] == {"ct": 4, "mr": 3 + 3 + 1}
    result = build_image_datalist(tmp_path / "png", spatial_dims=2, group_by="file")
    assert result.skipped == [] and result.class_names == ["ct", "mr"]
    for item in result.train + result.val:
        assert item["image"].endswith(".png") and max(LoadMedicalImaged("image")(item)["image"].shape[1:]) <= 64


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spatial_dims": 4}, "spatial_dims must be 2 or 3"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"num_variants": 1.5}, "num_variants must be an integer >= 0 or None"),
        ({"image_format": "jpg"}, "image_format must be one of"),
        ({"spatial_dims": 3, "image_format": "png"}, "image_format applies to spatial_dims=2 only"),
        ({"max_size": 8}, "max_size must be an integer >= 16 or None"),
        ({"slices_per_volume": 0}, "slices_per_volume must be an integer >= 1"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_example_dataset(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main([str(out), "--spatial_dims", "2", "--seed", "3", "--num_variants", "2", "--slices_per_volume", "1"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote the 2D example dataset in {out}" in printed
    assert "ct: 5 images (3 real, 2 augmented)" in printed and "mr: 8 images (6 real, 2 augmented)" in printed
    assert main([str(out), "--seed", "3", "--num_variants", "2", "--slices_per_volume", "1"]) == 0
    assert "already there" in capsys.readouterr().out
    assert main([str(out), "--seed", "4", "--num_variants", "2", "--slices_per_volume", "1"]) == 2
    assert "seed: 3 there, 4 now" in capsys.readouterr().err
