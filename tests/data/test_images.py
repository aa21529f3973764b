"""Any-modality datalists on real files that ship in pydicom and nibabel: folders, Decathlon datalists, DICOM
series, 2D slices of volumes, labels, groups and every kind of bad input (a clear error or a listed skip)."""

from __future__ import annotations

import copy
import csv
import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from monai.data import load_decathlon_datalist
from PIL import Image
from pydicom import examples
from pydicom.uid import generate_uid

from medvq.data import build_image_datalist
from medvq.transforms import LoadMedicalImaged, image_preprocessing

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"
CT = Path(examples.get_path("ct"))  # CT_small.dcm: 128 x 128, RescaleSlope 1, RescaleIntercept -1024
MR = Path(examples.get_path("mr"))  # MR_small.dcm: 64 x 64
ANATOMICAL = NIBABEL_DATA / "anatomical.nii"  # T1, 33 x 41 x 25, LAS
EXAMPLE_4D = NIBABEL_DATA / "example4d.nii.gz"  # 128 x 96 x 24 x 2


def write_ct_series(folder: Path, n: int = 6, air: tuple[int, ...] = (), slope: float = 1.0) -> list[np.ndarray]:
    """Write CT_small as ``n`` single-frame DICOMs of one series, 5 mm apart (slice k shifted by 4k columns; the
    ``air`` slices all -1024 HU), InstanceNumbers in REVERSE order of position and file names shuffled, so only
    the positions give the order. Stored values are HU / slope + 1024 with RescaleSlope ``slope``. Returns the HU
    slices in position order."""
    folder.mkdir(parents=True, exist_ok=True)
    base = pydicom.dcmread(CT)
    hu = base.pixel_array.astype(np.float64) * float(base.RescaleSlope) + float(base.RescaleIntercept)
    uid, slices = generate_uid(), []
    for k in range(n):
        ds = copy.deepcopy(base)
        slice_hu = np.full_like(hu, -1024.0) if k in air else np.roll(hu, 4 * k, axis=1)
        ds.PixelData = np.round((slice_hu + 1024) / slope).astype(np.uint16 if ds.PixelRepresentation == 0 else np.int16).tobytes()
        ds.RescaleSlope, ds.RescaleIntercept = slope, -1024
        ds.SeriesInstanceUID, ds.SOPInstanceUID = uid, generate_uid()
        position = [float(v) for v in base.ImagePositionPatient]
        ds.ImagePositionPatient = [position[0], position[1], position[2] + 5.0 * k]
        ds.InstanceNumber = n - k
        ds.save_as(folder / f"im{(7 * k) % n:02d}_{k}.dcm")
        slices.append(np.round((slice_hu + 1024) / slope) * slope - 1024)
    return slices


def put(source: Path, destination: Path) -> Path:
    """Copy a file, creating the destination's folders."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, destination)
    return destination


def ct_png(path: Path) -> Path:
    """CT_small windowed to 8 bits (grayscale PNG / JPEG by the suffix)."""
    ds = pydicom.dcmread(CT)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip((hu + 1000) / 2000 * 255, 0, 255).astype(np.uint8)).save(path)
    return path


def mr_png(path: Path) -> Path:
    pixels = pydicom.dcmread(MR).pixel_array.astype(np.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((pixels / pixels.max() * 255).astype(np.uint8)).save(path)
    return path


def read_skipped(output_dir: Path) -> list[dict]:
    with open(output_dir / "skipped_images.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def reason_of(rows: list[dict], name: str) -> str:
    return next(r["reason"] for r in rows if Path(r["file"]).name == name)


# ---------------------------------------------------------------------------------------------------- folders, 2D
def test_folder_of_2d_images_labels_from_folders_and_outputs(tmp_path):
    root = tmp_path / "data"
    put(CT, root / "ct" / "ct.dcm")
    ct_png(root / "ct" / "ct.png")
    ct_png(root / "ct" / "ct.jpg")
    put(MR, root / "mr" / "mr.dcm")
    mr_png(root / "mr" / "mr.png")
    (root / "mr" / "notes.txt").write_text("not an image")
    out = tmp_path / "run"

    result = build_image_datalist(root, spatial_dims=2, output_dir=out, group_by="file", val_fraction=0.4, seed=1)

    items = result.train + result.val
    assert sorted(Path(i["image"]).name for i in items) == ["ct.dcm", "ct.jpg", "ct.png", "mr.dcm", "mr.png"]
    assert result.class_names == ["ct", "mr"] and result.channels == 1 and result.spatial_dims == 2
    for item in items:
        assert item["label"] == (0 if Path(item["image"]).parent.name == "ct" else 1)
        assert "slice_index" not in item and item["group"] == Path(item["image"]).relative_to(root).as_posix()
    assert len(result.val) == 2 and result.skipped == []  # round(0.4 * 5) groups; notes.txt is not an image
    saved = json.loads((out / "datalist.json").read_text())
    assert saved["labels"] == {"0": "ct", "1": "mr"}
    assert load_decathlon_datalist(out / "datalist.json", is_segmentation=False, data_list_key="training") == result.train
    assert load_decathlon_datalist(out / "datalist.json", is_segmentation=False, data_list_key="validation") == result.val
    assert read_skipped(out) == []  # header only, written even when nothing is skipped
    again = build_image_datalist(root, spatial_dims=2, group_by="file", val_fraction=0.4, seed=1)
    assert again.train == result.train and again.val == result.val  # the seeded split is deterministic

    # every item loads through the training pipeline (1 channel, 32 x 32, [-1, 1])
    transform = image_preprocessing(modality="xray", image_size=32, train=False)
    for item in items:
        image = transform(item)["image"]
        assert image.shape == (1, 32, 32) and -1 <= float(image.min()) and float(image.max()) <= 1


def test_group_by_folder_keeps_a_folder_on_one_side_and_warns_on_class_folders(tmp_path, caplog):
    root = tmp_path / "data"
    for patient in ("p1", "p2", "p3", "p4"):
        put(CT, root / "ct" / patient / "a.dcm")
        ct_png(root / "ct" / patient / "b.png")
    result = build_image_datalist(root, val_fraction=0.5)
    train_groups = {i["group"] for i in result.train}
    val_groups = {i["group"] for i in result.val}
    assert len(train_groups) == len(val_groups) == 2 and not train_groups & val_groups
    assert all(i["group"] == Path(i["image"]).parent.relative_to(root).as_posix() for i in result.train + result.val)
    assert "each label folder is also one split unit" in caplog.text  # label ct/p1 is also the group ct/p1

    caplog.clear()
    flat = tmp_path / "flat"
    for cls in ("ct", "mr"):
        for k in range(2):
            (ct_png if cls == "ct" else mr_png)(flat / cls / f"{k}.png")
    with caplog.at_level(logging.WARNING):
        build_image_datalist(flat, val_fraction=0.5)
    assert "validation holds whole classes" in caplog.text and "group_by='file'" in caplog.text
    unlabelled = build_image_datalist(flat, labels=False, group_by="file")
    assert unlabelled.class_names is None and all("label" not in i for i in unlabelled.train + unlabelled.val)


def test_group_by_patient_id_joins_dicoms_of_one_patient(tmp_path):
    root = tmp_path / "data"
    for folder in ("a", "b", "c"):
        put(CT, root / folder / "ct.dcm")  # PatientID 1CT1
    shutil.copy(MR, root / "c" / "mr.dcm")
    by_patient = build_image_datalist(root, group_by="patient_id", val_fraction=0.5)
    groups = {Path(i["image"]).relative_to(root).as_posix(): i["group"] for i in by_patient.train + by_patient.val}
    assert groups["a/ct.dcm"] == groups["b/ct.dcm"] == groups["c/ct.dcm"] == "patient:1CT1"
    assert groups["c/mr.dcm"] == f"patient:{pydicom.dcmread(MR).PatientID}"
    assert len({i["group"] for i in by_patient.val}) == 1
    assert len({i["group"] for i in build_image_datalist(root, group_by="folder").train}) >= 2


# ---------------------------------------------------------------------------------------------------- DICOM series
def test_dicom_series_folder_is_one_volume_sorted_by_position_with_rescale(tmp_path):
    root = tmp_path / "data"
    hu = write_ct_series(root / "patient1" / "ct", n=6, slope=0.5)
    shutil.copy(CT, root / "patient1" / "scout.dcm")  # a lone 2-D DICOM beside the series folder

    result = build_image_datalist(root, spatial_dims=3, output_dir=tmp_path / "run", val_fraction=0)
    assert [i["image"] for i in result.train] == [str(root / "patient1" / "ct")] and result.val == []
    assert reason_of(result.skipped, "scout.dcm").startswith("2-D image")  # spatial_dims=3 needs volumes
    assert result.train[0]["group"] == "patient1/ct" and result.class_names == ["patient1"]

    volume = LoadMedicalImaged("image")({"image": result.train[0]["image"]})["image"]
    assert volume.shape == (1, 128, 128, 6)
    for k in range(6):  # InstanceNumbers run backwards: only the positions give this order
        np.testing.assert_allclose(volume[0, :, :, k].numpy(), hu[k], atol=1e-3)  # slope 0.5 applied by MONAI
    assert np.isclose(abs(float(volume.affine[2, 2])), 5.0)  # 5 mm between slices


def test_folder_with_two_series_skips_the_series_files(tmp_path):
    folder = tmp_path / "data" / "mixed"
    write_ct_series(folder, n=3)
    write_ct_series(tmp_path / "other", n=2)
    for path in (tmp_path / "other").iterdir():
        shutil.move(path, folder / f"other_{path.name}")
    shutil.copy(MR, folder / "mr.dcm")
    result = build_image_datalist(tmp_path / "data", spatial_dims=2, output_dir=tmp_path / "run", val_fraction=0)
    assert [Path(i["image"]).name for i in result.train] == ["mr.dcm"]
    rows = read_skipped(tmp_path / "run")
    assert len(rows) == 5 and all(r["reason"].startswith("several DICOM series in one folder") for r in rows)
    assert "Put each series in its own folder" in rows[0]["reason"]


# ---------------------------------------------------------------------------------------------------- 2D from 3D
def test_volumes_become_slices_near_empty_dropped_and_each_volume_in_one_split(tmp_path):
    root = tmp_path / "data"
    anatomical = nib.load(ANATOMICAL)
    padded = np.zeros(anatomical.shape[:2] + (anatomical.shape[2] + 6,), np.int16)
    padded[:, :, 3:-3] = np.asanyarray(anatomical.dataobj)  # 3 empty slices on each side of the real 25
    (root / "mr" / "a").mkdir(parents=True)
    nib.save(nib.Nifti1Image(padded, anatomical.affine), root / "mr" / "a" / "padded.nii.gz")
    put(ANATOMICAL, root / "mr" / "b" / "anatomical.nii")
    write_ct_series(root / "ct" / "c", n=6, air=(0, 5))

    result = build_image_datalist(root, spatial_dims=2, slice_axis=2, val_fraction=0.5, output_dir=tmp_path / "run")

    items = result.train + result.val
    by_volume: dict[str, list[int]] = {}
    for item in items:
        assert item["slice_axis"] == 2
        by_volume.setdefault(Path(item["image"]).name, []).append(item["slice_index"])
    assert sorted(by_volume["padded.nii.gz"]) == list(range(3, 28))
    assert sorted(by_volume["anatomical.nii"]) == list(range(25))
    assert sorted(by_volume["c"]) == [1, 2, 3, 4]  # the all-air slices 0 and 5 are near-empty
    assert result.dropped_slices == {str(root / "mr" / "a" / "padded.nii.gz"): [0, 1, 2, 28, 29, 30],
                                     str(root / "ct" / "c"): [0, 5]}
    for name in by_volume:  # all slices of a volume on one side
        sides = {side for side, part in (("train", result.train), ("val", result.val))
                 for i in part if Path(i["image"]).name == name}
        assert len(sides) == 1
    assert result.val and result.train
    # labels: the folder holding the series folder (ct), or the volume file (mr/a, mr/b), relative to the root
    assert result.class_names == ["ct", "mr/a", "mr/b"]
    assert {i["label"] for i in items if Path(i["image"]).name == "c"} == {0}
    saved = load_decathlon_datalist(tmp_path / "run" / "datalist.json", is_segmentation=False)
    assert {(i["image"], i["slice_index"]) for i in saved} == {(i["image"], i["slice_index"]) for i in result.train}


def test_slice_axis_counts_in_ras_axes(tmp_path):
    anatomical = nib.load(ANATOMICAL)  # LAS: axis 0 runs right to left, so RAS reverses it
    padded = np.zeros((anatomical.shape[0] + 2,) + anatomical.shape[1:], np.int16)
    padded[2:] = np.asanyarray(anatomical.dataobj)  # 2 empty slices at the file's first (most right) indices
    affine = anatomical.affine.copy()
    affine[0, 3] += 4.0  # the two extra slices lie 2 and 4 mm to the right of the original first one
    nib.save(nib.Nifti1Image(padded, affine), tmp_path / "padded.nii")
    result = build_image_datalist(tmp_path, spatial_dims=2, slice_axis=0, val_fraction=0)
    assert result.dropped_slices == {str(tmp_path / "padded.nii"): [33, 34]}  # the last two in RAS order
    image = image_preprocessing(modality="mr", image_size=41, train=False)(result.train[0])["image"]
    assert image.shape == (1, 41, 41)


# ---------------------------------------------------------------------------------------------------- datalists
def test_datalist_relative_paths_labels_missing_entry_and_seeded_split(tmp_path, caplog):
    folder = tmp_path / "lists"
    (folder / "images").mkdir(parents=True)
    shutil.copy(CT, folder / "images" / "ct.dcm")
    shutil.copy(MR, folder / "images" / "mr.dcm")
    ct_png(folder / "images" / "ct.png")
    mr_png(folder / "other" / "mr.png")
    entries = [
        {"image": "images/ct.dcm", "label": "ct", "age": 50},
        {"image": "images/mr.dcm", "label": "mr"},
        {"image": "images/ct.png", "label": "ct"},
        {"image": "other/mr.png", "label": "mr"},
        {"image": "images/missing.dcm", "label": "ct"},
    ]
    path = folder / "datalist.json"
    path.write_text(json.dumps({"training": entries}))
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        result = build_image_datalist(datalist=path, val_fraction=0.5, seed=3, output_dir=out)
    assert "skipped 1 of 5 files (1 file not found)" in caplog.text
    assert read_skipped(out) == [{"file": str(folder / "images" / "missing.dcm"), "reason": "file not found",
                                  "group": "images"}]
    items = result.train + result.val
    assert sorted(i["image"] for i in items) == sorted(str(folder / e["image"]) for e in entries[:4])
    assert result.class_names == ["ct", "mr"]
    assert all(i["label"] == (0 if "ct" in Path(i["image"]).name else 1) for i in items)
    assert next(i for i in items if i["image"].endswith("ct.dcm"))["age"] == 50  # other fields kept
    assert {i["group"] for i in result.val}.isdisjoint({i["group"] for i in result.train})  # by folder
    again = build_image_datalist(datalist=path, val_fraction=0.5, seed=3)
    assert (again.train, again.val) == (result.train, result.val)

    # a validation list is used as given
    path.write_text(json.dumps({"training": entries[:3], "validation": entries[3:4]}))
    given = build_image_datalist(datalist=path)
    assert [i["image"] for i in given.val] == [str(folder / "other" / "mr.png")] and len(given.train) == 3


def test_datalist_entry_may_be_a_dicom_series_folder_and_4d_entries_are_listed(tmp_path):
    hu = write_ct_series(tmp_path / "scans" / "series", n=4)
    put(EXAMPLE_4D, tmp_path / "scans" / "fmri.nii.gz")
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"training": [{"image": "scans/series"}, {"image": "scans/fmri.nii.gz"}]}))
    result = build_image_datalist(datalist=path, spatial_dims=3, val_fraction=0, output_dir=tmp_path / "run")
    assert [i["image"] for i in result.train] == [str(tmp_path / "scans" / "series")]
    assert reason_of(read_skipped(tmp_path / "run"), "fmri.nii.gz").startswith("4-D image")
    image = image_preprocessing(modality="ct", spatial_dims=3, roi_size=(64, 64, 8), train=False)(result.train[0])
    assert image["image"].shape == (1, 64, 64, 8) and len(hu) == 4


def test_datalist_with_no_existing_entry_is_an_error(tmp_path):
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"training": [{"image": "gone.nii.gz"}, {"image": "lost/ct.dcm"}]}))
    with pytest.raises(ValueError, match=r"no readable image in datalist '.*datalist.json'.*2 skipped.*file not found"):
        build_image_datalist(datalist=path)
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="needs a 'training' list"):
        build_image_datalist(datalist=path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_image_datalist(datalist=tmp_path / "nope.json")


def test_datalist_labels_must_be_all_or_none(tmp_path):
    shutil.copy(CT, tmp_path / "ct.dcm")
    shutil.copy(MR, tmp_path / "mr.dcm")
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"training": [{"image": "ct.dcm", "label": 1}, {"image": "mr.dcm"}]}))
    with pytest.raises(ValueError, match="some datalist items have a 'label' and others not"):
        build_image_datalist(datalist=path)
    path.write_text(json.dumps({"training": [{"image": "ct.dcm", "label": 2}, {"image": "mr.dcm", "label": 0}]}))
    result = build_image_datalist(datalist=path, val_fraction=0)
    assert result.class_names == ["0", "1", "2"] and sorted(i["label"] for i in result.train) == [0, 2]


# ---------------------------------------------------------------------------------------------------- bad input
def test_folder_with_no_readable_image_names_folder_and_endings(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(FileNotFoundError, match=r"no image in folder '.*'.*\.png.*\.nii\.gz"):
        build_image_datalist(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "garbage.dcm").write_bytes(b"\x00" * 300)
    with pytest.raises(ValueError, match=rf"no readable image in folder '{tmp_path}'.*\.jpeg.*\.dcm.*unreadable"):
        build_image_datalist(tmp_path, output_dir=tmp_path / "run")
    assert sorted(Path(r["file"]).name for r in read_skipped(tmp_path / "run")) == ["broken.png", "garbage.dcm"]


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_4d_nifti_is_a_listed_skip(tmp_path, caplog, spatial_dims):
    shutil.copy(EXAMPLE_4D, tmp_path / "example4d.nii.gz")
    shutil.copy(ANATOMICAL, tmp_path / "anatomical.nii")
    with caplog.at_level(logging.WARNING):
        result = build_image_datalist(tmp_path, spatial_dims=spatial_dims, output_dir=tmp_path / "run")
    assert "skipped 1 of 2 files (1 4-D image)" in caplog.text
    reason = reason_of(read_skipped(tmp_path / "run"), "example4d.nii.gz")
    assert reason.startswith("4-D image: shape (128, 96, 24, 2)") and "four_to_three" in reason
    assert {Path(i["image"]).name for i in result.train + result.val} == {"anatomical.nii"}


def test_unusable_dicoms_from_pydicom_test_files_are_counted_by_reason(tmp_path, caplog):
    names = {
        "rtplan.dcm": "not an image",  # no pixel data
        "examples_ybr_color.dcm": "multi-frame DICOM",  # 30-frame ultrasound
        "examples_palette.dcm": "unsupported DICOM",  # PALETTE COLOR
        "MR_truncated.dcm": "unreadable",  # fewer pixel bytes than the header says
        "MR_small_bigendian.dcm": None,
        "MR_small_RLE.dcm": None,
    }
    for name in names:
        shutil.copy(PYDICOM_FILES / name, tmp_path / name)
    with caplog.at_level(logging.WARNING):
        result = build_image_datalist(tmp_path, output_dir=tmp_path / "run", val_fraction=0)
    rows = read_skipped(tmp_path / "run")
    for name, reason in names.items():
        if reason is None:
            assert any(Path(i["image"]).name == name for i in result.train)
        else:
            assert reason_of(rows, name).startswith(reason)
    assert "skipped 4 of 6 files" in caplog.text and "1 multi-frame DICOM" in caplog.text


def test_mixed_channel_counts_error_or_converted(tmp_path):
    rgb = pydicom.dcmread(examples.get_path("rgb_color")).pixel_array  # (240, 320, 3) ultrasound
    Image.fromarray(rgb).save(tmp_path / "us.png")
    ct_png(tmp_path / "ct.png")
    with pytest.raises(ValueError, match=r"mix channel counts: 1 with 1 channel\(s\), e\.g\. '.*ct\.png'; 1 with 3 "
                       r"channel\(s\), e\.g\. '.*us\.png'.*channels=1.*channels=3"):
        build_image_datalist(tmp_path)
    result = build_image_datalist(tmp_path, channels=3, val_fraction=0)
    assert result.channels == 3
    transform = image_preprocessing(modality="rgb", image_size=32, channels=3, train=False)
    assert {tuple(transform(i)["image"].shape) for i in result.train} == {(3, 32, 32)}


def test_ct_without_rescale_tags_is_kept_with_a_warning(tmp_path, caplog):
    ds = pydicom.dcmread(CT)
    del ds.RescaleSlope, ds.RescaleIntercept
    ds.save_as(tmp_path / "bare.dcm")
    shutil.copy(CT, tmp_path / "ct.dcm")
    with caplog.at_level(logging.WARNING):
        result = build_image_datalist(tmp_path, val_fraction=0)
    assert len(result.train) == 2 and result.skipped == []
    assert "1 CT DICOM image(s) lack RescaleSlope / RescaleIntercept" in caplog.text
    assert "read as Hounsfield units" in caplog.text and "bare.dcm" in caplog.text


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="exactly one of dataset_dir"):
        build_image_datalist()
    with pytest.raises(ValueError, match="exactly one of dataset_dir"):
        build_image_datalist(tmp_path, datalist=tmp_path / "d.json")
    for kwargs, name in [({"spatial_dims": 4}, "spatial_dims"), ({"slice_axis": 3}, "slice_axis"),
                         ({"group_by": "patient"}, "group_by"), ({"channels": 2}, "channels"),
                         ({"val_fraction": 1.0}, "val_fraction"), ({"min_slice_foreground": -0.1}, "min_slice_fore"),
                         ({"foreground_level": 2}, "foreground_level")]:
        with pytest.raises(ValueError, match=name):
            build_image_datalist(tmp_path, **kwargs)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        build_image_datalist(tmp_path / "missing")
