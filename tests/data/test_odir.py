"""ODIR-5K datalists on small fake ODIR trees written here: layouts, per-eye labels, skipped images, split, JSON."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import openpyxl  # a dependency of medvq (xlsx tables): a missing install must fail here, not skip
import pytest
from monai.data import load_decathlon_datalist
from PIL import Image

from medvq.data import (
    CLASSES,
    build_odir_datalist,
    detect_odir_layout,
    keywords_to_label,
    split_datalist,
    write_datalist_json,
)
from medvq.transforms import FOREGROUND_THRESHOLD, fundus_preprocessing

HEADER = [
    "ID", "Patient Age", "Patient Sex", "Left-Fundus", "Right-Fundus",
    "Left-Diagnostic Keywords", "Right-Diagnostic Keywords", "N", "D", "G", "C", "A", "H", "M", "O",
]  # fmt: skip
# (ID, left keywords, right keywords); the official separator is the full-width comma U+FF0C
PATIENTS = [
    (0, "cataract", "normal fundus"),
    (1, "moderate non proliferative retinopathy，drusen", "normal fundus，lens dust"),  # right: unusable
    (2, "dry age-related macular degeneration", "pathological myopia"),  # right: corrupt JPEG
    (3, "hypertensive retinopathy,suspected glaucoma", "normal fundus"),  # ASCII comma; right: file missing
    *[(i, "normal fundus", "normal fundus") for i in range(4, 12)],  # 4_left.jpg: truncated JPEG
]
CORRUPT, MISSING, TRUNCATED = "2_right.jpg", "3_right.jpg", "4_left.jpg"


def _label(*classes: str) -> list[float]:
    return [1.0 if c in classes else 0.0 for c in CLASSES]


EXPECTED = {  # per-eye labels worked out by hand from the keywords above
    (0, "left"): _label("C"),
    (0, "right"): _label("N"),
    (1, "left"): _label("D", "O"),
    (2, "left"): _label("A"),
    (3, "left"): _label("H", "G"),
    (4, "right"): _label("N"),
}


def _write_jpeg(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    array = np.zeros((12, 16, 3), np.uint8)
    array[2:10, 3:13] = rng.integers(60, 250, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="JPEG")


def _write_images(image_dir: Path, names: list[str]) -> None:
    for i, name in enumerate(names):
        if name == MISSING:
            continue
        if name == CORRUPT:
            (image_dir / name).write_bytes(np.random.default_rng(0).bytes(300))  # not an image
        else:
            _write_jpeg(image_dir / name, i)
        if name == TRUNCATED:  # a valid header, half the data: only decoding finds out
            (image_dir / name).write_bytes((image_dir / name).read_bytes()[:300])


def _patient_row(pid: int, left: str, right: str) -> list:
    return [pid, 60, "Female", f"{pid}_left.jpg", f"{pid}_right.jpg", left, right, 0, 0, 0, 0, 0, 0, 0, 0]


def _write_xlsx(path: Path, rows: list[list], header: list[str] = HEADER) -> None:
    _write_workbook(path, [("Sheet", [header, *rows])])


def _write_workbook(path: Path, sheets: list[tuple[str, list[list]]]) -> None:
    """An xlsx with the given (title, rows) sheets, in order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)
    for title, rows in sheets:
        sheet = workbook.create_sheet(title)
        for row in rows:
            sheet.append(row)
    workbook.save(path)


def make_official_tree(root: Path) -> Path:
    _write_xlsx(root / "ODIR-5K_Training_Annotations(Updated)_V2.xlsx", [_patient_row(*p) for p in PATIENTS])
    _write_images(
        root / "ODIR-5K_Training_Dataset", [f"{p[0]}_{eye}.jpg" for p in PATIENTS for eye in ("left", "right")]
    )
    return root


def make_kaggle_csv_tree(root: Path) -> Path:
    """full_df.csv: one row per eye image; 'labels' is per eye; patient 5's left eye is an anterior segment image."""
    rows = []
    for pid, left, right in PATIENTS:
        if pid == 5:
            left = "anterior segment image"
        for eye, keywords in (("left", left), ("right", right)):
            if eye == "right" and pid == 1:  # the Kaggle csv leaves some unusable images out altogether
                continue
            single = {"normal fundus": "N", "cataract": "C", "pathological myopia": "M"}.get(keywords, "D")
            name = f"{pid}_{eye}.jpg"
            rows.append(
                [
                    *_patient_row(pid, left, right),
                    f"../input/odir/{name}",
                    f"['{single}']",
                    "[1, 0, 0, 0, 0, 0, 0, 0]",
                    name,
                ]
            )
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "full_df.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([*HEADER, "filepath", "labels", "target", "filename"])
        writer.writerows(rows)
    _write_images(root / "preprocessed_images", [r[-1] for r in rows])
    return root


@pytest.fixture
def official(tmp_path: Path) -> Path:
    return make_official_tree(tmp_path / "odir")


def _by_eye(items: list[dict]) -> dict:
    return {(item["patient_id"], item["eye"]): item for item in items}


# ------------------------------------------------------------------------------------------------ keyword mapping
@pytest.mark.parametrize(
    "keywords, classes, unusable",
    [
        ("normal fundus", "N", []),
        ("mild nonproliferative retinopathy", "D", []),
        ("severe proliferative diabetic retinopathy", "D", []),
        ("suspected glaucoma", "G", []),
        ("cataract", "C", []),
        ("wet age-related macular degeneration", "A", []),
        ("hypertensive retinopathy", "H", []),
        ("myopic maculopathy", "M", []),
        ("drusen，epiretinal membrane", "O", []),
        ("  Normal  Fundus ，lens dust", "N", ["lens dust"]),
        ("low image quality,maculopathy", "O", ["low image quality"]),
        ("optic disk photographically invisible", "", ["optic disk photographically invisible"]),
        ("", "", []),
        (None, "", []),
    ],
)
def test_keywords_to_label_by_hand(keywords, classes, unusable):
    label, found = keywords_to_label(keywords)
    assert label == _label(*classes)
    assert found == unusable


def test_keywords_to_label_custom_unusable_list_keeps_lens_dust_images():
    assert keywords_to_label("normal fundus，lens dust", unusable_keywords=()) == (_label("N", "O"), [])


# ------------------------------------------------------------------------------------------------ official xlsx layout
def test_official_layout_labels_skipped_and_report(official, tmp_path, caplog):
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="medvq.data.odir"):
        odir = build_odir_datalist(official, output_dir=out, val_fraction=0.25)
    assert odir.layout == "xlsx" and odir.annotations.name.endswith("_V2.xlsx")
    items = _by_eye(odir.train + odir.val)
    assert len(items) == 2 * len(PATIENTS) - 4
    for key, label in EXPECTED.items():
        assert items[key]["label"] == label, key
    item = items[(1, "left")]
    assert item["keywords"] == "moderate non proliferative retinopathy，drusen"
    assert item["image"] == str((official / "ODIR-5K_Training_Dataset" / "1_left.jpg").absolute())
    assert Path(item["image"]).is_absolute() and isinstance(item["patient_id"], int)

    # the four unusable images: an unusable keyword, a corrupt and a truncated JPEG, a missing file, with reasons
    reasons = {(s["patient_id"], s["eye"]): s["reason"] for s in odir.skipped}
    assert set(reasons) == {(1, "right"), (2, "right"), (3, "right"), (4, "left")}
    assert "lens dust" in reasons[(1, "right")]
    assert reasons[(2, "right")].startswith("unreadable image")
    assert reasons[(4, "left")].startswith("unreadable image") and "truncated" in reasons[(4, "left")].lower()
    assert reasons[(3, "right")] == "file not found"
    with open(out / "skipped_images.csv", newline="", encoding="utf-8") as f:
        listed = list(csv.DictReader(f))
    assert [(int(r["patient_id"]), r["eye"], r["reason"]) for r in listed] == [
        (s["patient_id"], s["eye"], s["reason"]) for s in odir.skipped
    ]
    assert listed[0]["file"].endswith("1_right.jpg") and listed[0]["keywords"] == "normal fundus，lens dust"
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "skipped 4 of 24 images" in warning and "skipped_images.csv" in warning


def test_skipped_csv_is_written_even_when_nothing_is_skipped(tmp_path):
    root = tmp_path / "clean"
    _write_xlsx(root / "ODIR-5K_Training_Annotations(Updated)_V2.xlsx", [_patient_row(0, "normal fundus", "cataract")])
    _write_images(root / "ODIR-5K_Training_Dataset", ["0_left.jpg", "0_right.jpg"])
    odir = build_odir_datalist(root, output_dir=tmp_path / "run", val_fraction=0.0)
    assert odir.skipped == [] and len(odir.train) == 2 and odir.val == []
    assert (tmp_path / "run" / "skipped_images.csv").read_text().splitlines() == ["file,patient_id,eye,reason,keywords"]


def test_split_keeps_both_eyes_of_a_patient_together_and_is_deterministic(official):
    odir = build_odir_datalist(official, val_fraction=0.25, seed=3)
    train_patients = {i["patient_id"] for i in odir.train}
    val_patients = {i["patient_id"] for i in odir.val}
    assert train_patients.isdisjoint(val_patients)
    assert len(val_patients) == round(0.25 * 12)  # 12 patients keep at least one usable eye
    again = build_odir_datalist(official, val_fraction=0.25, seed=3)
    assert again.train == odir.train and again.val == odir.val
    other_seeds = [
        {i["patient_id"] for i in build_odir_datalist(official, val_fraction=0.25, seed=s).val} for s in range(4, 8)
    ]
    assert any(v != val_patients for v in other_seeds)


def test_split_datalist_by_patient_and_by_image():
    items = [{"image": f"{p}_{e}.png", "patient_id": p, "eye": e} for p in range(10) for e in ("left", "right")]
    split = split_datalist(items, val_fraction=0.2, seed=0)
    assert len(split.val) == 4 and len(split.train) == 16
    assert {i["patient_id"] for i in split.val}.isdisjoint(i["patient_id"] for i in split.train)
    # membership depends on the patient, not on the order of the items
    assert {i["image"] for i in split_datalist(items[::-1], 0.2, 0).val} == {i["image"] for i in split.val}
    by_image = split_datalist(items, val_fraction=0.25, seed=0, split_by="image")
    assert len(by_image.val) == 5
    assert len(split_datalist(items[:4], val_fraction=0.01).val) == 2  # one val patient when asked for any
    assert split_datalist(items[:4], val_fraction=0.0).val == []
    assert split_datalist(items[:2], val_fraction=0.5).val == []  # one patient: never all of them in val


# ------------------------------------------------------------------------------------- images that cannot train
def _save(path: Path, array: np.ndarray, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)


def _one_bright_pixel_jpeg(path: Path) -> None:
    """400 x 400 black but for one white pixel: at the screening's 1/8 scale its block averages to ~4, below 10."""
    array = np.zeros((400, 400, 3), np.uint8)
    array[203, 198] = 255
    _save(path, array, format="JPEG", quality=95)


def _innermost(error: BaseException) -> BaseException:
    while error.__cause__ is not None:  # MONAI's Compose wraps a transform's error in a RuntimeError
        error = error.__cause__
    return error


def test_images_without_field_of_view_are_skipped_and_every_kept_image_trains(tmp_path, caplog):
    root = tmp_path / "odir"
    names = {(p[0], eye): f"{p[0]}_{eye}.jpg" for p in PATIENTS for eye in ("left", "right")}
    names |= {(7, "left"): "7_left.png", (9, "left"): "9_left.png", (9, "right"): "9_right.png",
              (10, "left"): "10_left.png", (10, "right"): "10_right.png"}  # fmt: skip
    rows = [_patient_row(*p) for p in PATIENTS]
    for row in rows:
        row[3:5] = names[(row[0], "left")], names[(row[0], "right")]
    _write_xlsx(root / "ODIR-5K_Training_Annotations(Updated)_V2.xlsx", rows)
    image_dir = root / "ODIR-5K_Training_Dataset"
    _write_images(image_dir, list(names.values()))
    gray = np.zeros((40, 52), np.uint8)
    gray[6:34, 8:44] = 140
    unusable = {  # decode fine, but no pixel's channel mean exceeds 10: FundusBorderCropd would stop the run
        (5, "left"): lambda p: _save(p, np.zeros((60, 80, 3), np.uint8), format="JPEG"),  # all black
        (6, "right"): lambda p: _save(p, np.zeros((1, 1, 3), np.uint8), format="JPEG"),  # 1 x 1 black
        (7, "left"): lambda p: _save(p, np.zeros((1, 1, 3), np.uint8)),  # 1 x 1 black PNG
        (10, "right"): lambda p: _save(p, (gray // 20).astype(np.uint16)),  # 16-bit PNG, values <= 7
    }
    usable = {  # odd but fine: the loader makes RGB of them and they have a field of view
        (8, "left"): _one_bright_pixel_jpeg,
        (9, "left"): lambda p: _save(p, gray),  # grayscale PNG
        (9, "right"): lambda p: _save(p, np.dstack([gray, gray, gray, np.full_like(gray, 255)])),  # RGBA PNG
        (10, "left"): lambda p: _save(p, gray.astype(np.uint16) * 257),  # 16-bit grayscale PNG
        (11, "left"): lambda p: _save(p, np.full((1, 1, 3), 200, np.uint8)),  # 1 x 1, bright: crops, pads, resizes
    }
    for key, write in {**unusable, **usable}.items():
        write(image_dir / names[key])

    with caplog.at_level(logging.WARNING, logger="medvq.data.odir"):
        odir = build_odir_datalist(root, output_dir=tmp_path / "run", val_fraction=0.25)

    reasons = {(s["patient_id"], s["eye"]): s["reason"] for s in odir.skipped}
    assert set(reasons) == {(1, "right"), (2, "right"), (3, "right"), (4, "left"), *unusable}
    for key in unusable:
        assert reasons[key].startswith("no field of view: no pixel's channel mean exceeds 10 "), key
    with open(tmp_path / "run" / "skipped_images.csv", newline="", encoding="utf-8") as f:
        listed = {(int(r["patient_id"]), r["eye"]): (r["file"], r["reason"]) for r in csv.DictReader(f)}
    assert listed == {(s["patient_id"], s["eye"]): (s["file"], s["reason"]) for s in odir.skipped}
    assert listed[(6, "right")][0] == str(image_dir / "6_right.jpg")
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "skipped 8 of 24 images" in warning and "4 no field of view" in warning and "2 unreadable image" in warning

    # end to end: the training preprocessing runs on every kept image, and fails on every image skipped for pixels
    kept = odir.train + odir.val
    assert {(i["patient_id"], i["eye"]) for i in kept} >= set(usable) and len(kept) == 16
    preprocessing = fundus_preprocessing(keys="image", image_size=64, train=True)
    for item in kept:
        image = preprocessing(dict(item))["image"]
        assert image.shape == (3, 64, 64) and -1 <= float(image.min()) < float(image.max()) <= 1, item["image"]
    for key in unusable:
        with pytest.raises(RuntimeError) as info:
            preprocessing({"image": str(image_dir / names[key])})
        assert "has no pixel whose channel mean exceeds 10" in str(_innermost(info.value)), key


def test_tiny_bright_field_of_view_missed_at_reduced_scale_is_kept(tmp_path):
    root = tmp_path / "odir"
    _write_xlsx(root / "ODIR-5K_Training_Annotations(Updated)_V2.xlsx", [_patient_row(0, "cataract", "cataract")])
    _write_images(root / "ODIR-5K_Training_Dataset", ["0_right.jpg"])
    path = root / "ODIR-5K_Training_Dataset" / "0_left.jpg"
    _one_bright_pixel_jpeg(path)
    with Image.open(path) as image:  # what the 1/8-scale screening sees: no pixel above the threshold
        image.draft("RGB", (50, 50))
        image.load()
        assert image.size == (50, 50) and np.asarray(image, np.float32).mean(-1).max() <= FOREGROUND_THRESHOLD
    odir = build_odir_datalist(root, val_fraction=0.0)
    assert odir.skipped == [] and {i["eye"] for i in odir.train} == {"left", "right"}
    image = fundus_preprocessing(keys="image", image_size=64, train=False)({"image": str(path)})["image"]
    assert float(image.max()) > -1  # the crop found the pixel: the disc is not all background
    # foreground_threshold is the screening's: above every pixel, nothing is left (and the reason names it)
    with pytest.raises(ValueError, match=r"first reason: no field of view: no pixel's channel mean exceeds 254\.5 "):
        build_odir_datalist(root, val_fraction=0.0, foreground_threshold=254.5)


# ------------------------------------------------------------------------------------------------ Kaggle layouts
def test_kaggle_csv_layout_uses_per_eye_labels_but_still_checks_keywords(tmp_path):
    root = make_kaggle_csv_tree(tmp_path / "kaggle")
    odir = build_odir_datalist(root, output_dir=tmp_path / "run", val_fraction=0.2)
    assert odir.layout == "csv" and odir.annotations.name == "full_df.csv"
    items = _by_eye(odir.train + odir.val)
    assert items[(0, "left")]["label"] == _label("C")
    assert items[(1, "left")]["label"] == _label("D")  # the csv's single label, not the keywords' D + O
    assert items[(0, "left")]["image"] == str((root / "preprocessed_images" / "0_left.jpg").absolute())
    reasons = {(s["patient_id"], s["eye"]): s["reason"] for s in odir.skipped}
    assert set(reasons) == {(5, "left"), (2, "right"), (3, "right"), (4, "left")}
    assert "anterior segment image" in reasons[(5, "left")]  # labels said N; the keyword marks it unusable
    assert len(items) + len(odir.skipped) == 2 * len(PATIENTS) - 1


def test_kaggle_nested_xlsx_layout_and_explicit_annotations(tmp_path):
    root = tmp_path / "kaggle"
    nested = root / "ODIR-5K" / "ODIR-5K"
    _write_xlsx(nested / "data.xlsx", [_patient_row(*p) for p in PATIENTS[:2]])
    _write_images(nested / "Training Images", ["0_left.jpg", "0_right.jpg", "1_left.jpg", "1_right.jpg"])
    odir = build_odir_datalist(root, val_fraction=0.0)
    assert odir.layout == "xlsx" and odir.annotations == nested / "data.xlsx"
    assert len(odir.train) == 3 and odir.train[0]["image"].startswith(str(nested / "Training Images"))

    make_kaggle_csv_tree(root)  # the full Kaggle download has both: the csv is picked unless told otherwise
    assert detect_odir_layout(root).layout == "csv"
    chosen = detect_odir_layout(root, annotations="ODIR-5K/ODIR-5K/data.xlsx")
    assert chosen.layout == "xlsx" and chosen.image_dir == nested / "Training Images"
    explicit = detect_odir_layout(root, annotations=nested / "data.xlsx", image_dir="preprocessed_images")
    assert explicit.image_dir == root / "preprocessed_images"


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("make", [None, "empty", "file"])
def test_missing_or_wrong_dataset_dir_says_what_and_how(tmp_path, make):
    target = tmp_path / "nowhere"
    if make == "empty":
        target.mkdir()
    elif make == "file":
        target.write_text("not a folder")
    with pytest.raises(FileNotFoundError) as info:
        build_odir_datalist(target)
    message = str(info.value)
    assert str(target) in message
    for looked_for in (
        "ODIR-5K_Training_Annotations(Updated)_V2.xlsx",
        "full_df.csv",
        "data.xlsx",
        "preprocessed_images",
    ):
        assert looked_for in message
    assert "ocular-disease-recognition-odir5k" in message and "never downloads" in message


def test_table_without_its_image_folder_names_the_folder(tmp_path):
    root = tmp_path / "odir"
    _write_xlsx(root / "ODIR-5K_Training_Annotations(Updated)_V2.xlsx", [_patient_row(0, "cataract", "cataract")])
    with pytest.raises(FileNotFoundError, match="ODIR-5K_Training_Dataset"):
        build_odir_datalist(root)


def test_malformed_tables_raise_naming_file_and_problem(tmp_path):
    root = tmp_path / "odir"
    (root / "ODIR-5K_Training_Dataset").mkdir(parents=True)
    table = root / "ODIR-5K_Training_Annotations(Updated)_V2.xlsx"
    _write_xlsx(table, [[0, "0_left.jpg", "0_right.jpg"]], header=["ID", "Left-Fundus", "Right-Fundus"])
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['Left-Diagnostic Keywords'"):
        build_odir_datalist(root)
    _write_xlsx(table, [])
    with pytest.raises(ValueError, match="has no data rows"):
        build_odir_datalist(root)
    _write_xlsx(table, [_patient_row("x7", "cataract", "cataract")])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"row 2: ID 'x7' is not an integer"):
        build_odir_datalist(root)


README_SHEET = [["ODIR-5K training annotations"], ["One row per patient; ID, Left-Fundus, ... see the next sheet."]]


def test_xlsx_whose_first_sheet_is_a_readme_reads_the_annotation_sheet_and_says_so(tmp_path, caplog):
    root = tmp_path / "odir"
    table = root / "ODIR-5K_Training_Annotations(Updated)_V2.xlsx"
    title = ["ODIR-5K annotations, version 2"]  # a title row above the header
    rows = [_patient_row(*p) for p in PATIENTS[:2]]
    _write_workbook(table, [("README", README_SHEET), ("Empty", []), ("annotations", [title, HEADER, *rows])])
    _write_images(root / "ODIR-5K_Training_Dataset", ["0_left.jpg", "0_right.jpg", "1_left.jpg", "1_right.jpg"])
    with caplog.at_level(logging.INFO, logger="medvq.data.odir"):
        odir = build_odir_datalist(root, val_fraction=0.0)
    assert sorted((i["patient_id"], i["eye"]) for i in odir.train) == [(0, "left"), (0, "right"), (1, "left")]
    assert _by_eye(odir.train)[(1, "left")]["label"] == EXPECTED[(1, "left")]
    logged = " ".join(r.getMessage() for r in caplog.records if "reading sheet" in r.getMessage())
    assert f"reading sheet 'annotations' of '{table}'" in logged
    assert "sheet 'README' lacks the column(s) ['ID', 'Left-Diagnostic Keywords'" in logged
    assert "sheet 'Empty' is empty" in logged

    # row numbers in messages are the sheet's own, and the sheet is named
    bad_id = _patient_row("x7", "", "")  # type: ignore[arg-type]
    _write_workbook(table, [("README", README_SHEET), ("annotations", [title, HEADER, rows[0], [], bad_id])])
    with pytest.raises(ValueError, match=r"sheet 'annotations', row 5: ID 'x7' is not an integer"):
        build_odir_datalist(root)


def test_xlsx_without_an_annotation_sheet_names_each_sheet_and_what_it_lacks(tmp_path):
    root = tmp_path / "odir"
    (root / "ODIR-5K_Training_Dataset").mkdir(parents=True)
    table = root / "ODIR-5K_Training_Annotations(Updated)_V2.xlsx"
    partial = [["ID", "Left-Fundus", "Right-Fundus", "N"], [0, "0_left.jpg", "0_right.jpg", 1]]
    _write_workbook(table, [("README", README_SHEET), ("Sheet2", partial), ("Empty", [])])
    with pytest.raises(ValueError) as info:
        build_odir_datalist(root)
    message = str(info.value)
    assert f"annotation table '{table}' has no sheet whose header names the annotation columns" in message
    assert (
        "sheet 'README' lacks the column(s) ['ID', 'Left-Diagnostic Keywords', 'Right-Diagnostic Keywords', "
        "'Left-Fundus', 'Right-Fundus']; sheet 'Sheet2' lacks the column(s) ['Left-Diagnostic Keywords', "
        "'Right-Diagnostic Keywords']; sheet 'Empty' is empty." in message
    )
    assert "Pass the ODIR-5K table itself as annotations" in message and "in one sheet of this workbook" in message


def test_csv_without_the_annotation_columns_names_what_it_lacks(tmp_path):
    root = make_kaggle_csv_tree(tmp_path / "kaggle")
    (root / "full_df.csv").write_text("ID,Left-Fundus,filename\n0,0_left.jpg,0_left.jpg\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"full_df.csv' lacks the column\(s\) \['Left-Diagnostic Keywords', 'Right-"):
        build_odir_datalist(root)


def test_bad_arguments_are_named(official):
    with pytest.raises(ValueError, match="val_fraction must be a number in"):
        build_odir_datalist(official, val_fraction=1.0)
    with pytest.raises(ValueError, match="split_by must be 'patient' or 'image'"):
        build_odir_datalist(official, split_by="eye")
    with pytest.raises(ValueError, match="annotations must be an .xlsx or .csv"):
        detect_odir_layout(official, annotations="ODIR-5K_Training_Dataset/0_left.jpg")
    with pytest.raises(ValueError, match="no usable image"):
        build_odir_datalist(official, image_dir="ODIR-5K_Training_Dataset/../")
    with pytest.raises(ValueError, match=r"foreground_threshold must be a number >= 0 \(0-255 intensity sc"):
        build_odir_datalist(official, foreground_threshold=-1)


# ------------------------------------------------------------------------------------------------ MONAI JSON
def test_written_json_reads_back_with_load_decathlon_datalist(official, tmp_path):
    odir = build_odir_datalist(official, val_fraction=0.25, check_images=False)
    assert len(odir.skipped) == 2  # check_images=False: the broken JPEGs pass, the missing file does not
    path = write_datalist_json(tmp_path / "json" / "odir.json", odir.train, odir.val, name="ODIR-5K")
    train = load_decathlon_datalist(path, is_segmentation=False, data_list_key="training")
    val = load_decathlon_datalist(path, is_segmentation=False, data_list_key="validation")
    assert train == odir.train and val == odir.val
    assert load_decathlon_datalist(path) == odir.train  # MONAI's defaults leave list labels alone too
    with pytest.raises(TypeError, match="training item 0 must be a dict"):
        write_datalist_json(tmp_path / "bad.json", ["a.png"])  # type: ignore[list-item]
