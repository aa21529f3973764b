"""ODIR-5K datalists: per-eye multi-hot labels, unusable images reported, a deterministic split by patient.

ODIR-5K (Ocular Disease Intelligent Recognition, 2019) holds colour fundus photographs of both eyes of 5,000
patients. Its annotation table has one row per patient; the ``N, D, G, C, A, H, M, O`` columns are PATIENT-level
(both eyes together), so the per-eye truth is read from the diagnostic keywords of each eye. Three layouts are
recognised under ``dataset_dir`` (checked in this order):

- ``xlsx`` (official): ``ODIR-5K_Training_Annotations(Updated)_V2.xlsx`` + ``ODIR-5K_Training_Dataset/``.
- ``csv`` (Kaggle ``ocular-disease-recognition-odir5k``): ``full_df.csv`` + ``preprocessed_images/``.
- ``xlsx`` (same Kaggle download): ``ODIR-5K/ODIR-5K/data.xlsx`` + ``ODIR-5K/ODIR-5K/Training Images/``.

The Kaggle download holds both ``full_df.csv`` and ``ODIR-5K/ODIR-5K/data.xlsx``; the csv (pre-cropped, resized
images) is picked; pass ``annotations="ODIR-5K/ODIR-5K/data.xlsx"`` for the original photographs instead. Of an
xlsx, the first sheet whose header (one of its first 5 non-empty rows) names the annotation columns is read, so a
README sheet in front of the table is passed over and named in the log.

Keyword to class mapping. Keywords are lower-cased, hyphens read as spaces, runs of spaces collapsed; a cell holds
several keywords joined by the full-width comma "，" (U+FF0C) or by ","; each keyword sets the first class whose
pattern it contains:

- N: ``normal fundus``
- D: ``diabetic retinopathy`` or ``proliferative retinopathy`` (mild / moderate / severe non-proliferative
  retinopathy, proliferative diabetic retinopathy, ...)
- G: ``glaucoma`` (also ``suspected glaucoma``)
- C: ``cataract``
- A: ``age related macular degeneration`` (dry / wet)
- H: ``hypertensive retinopathy`` or ``hypertension``
- M: ``myopi`` (pathological myopia, myopia retinopathy, myopic retinopathy, myopic maculopathy)
- O: any other keyword that is not an unusable-image marker (drusen, epiretinal membrane, laser spot, retinal vein
  occlusion, tessellated fundus, ...). Drusen count as O: drusen alone are not an AMD diagnosis, and public ODIR
  loaders map them to O too.

Unusable-image markers (:data:`UNUSABLE_KEYWORDS`, matched as substrings): an image whose keywords contain one is
skipped, whatever else its keywords say. Images that are missing, cannot be decoded or show no field of view (no pixel
whose channel mean exceeds :data:`medvq.transforms.FOREGROUND_THRESHOLD`, e.g. all black: the border crop of
:func:`medvq.transforms.fundus_preprocessing` would stop training on them) are skipped too. Every skipped image is
returned in :attr:`OdirDatalist.skipped` with its reason, summarised by ``logging.warning`` and, with
``output_dir``, listed in ``output_dir/skipped_images.csv``; nothing is dropped silently.

Limitations: the Kaggle ``full_df.csv`` keeps one (single) class per image in its ``labels`` column; that column is
used as given, so csv labels are one-hot where the keywords may name several findings. The ODIR test images carry
no labels and are not listed. ODIR-5K is for research use and is never downloaded or redistributed by medvq.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import logging
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import islice, repeat
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from medvq.transforms.fundus import FOREGROUND_THRESHOLD, ForegroundAbove
from medvq.transforms.fundus import _to_rgb as _loader_rgb  # the training loader's converter: same pixels here

__all__ = [
    "CLASSES",
    "CLASS_NAMES",
    "UNUSABLE_KEYWORDS",
    "DatalistSplit",
    "OdirDatalist",
    "OdirLayout",
    "build_odir_datalist",
    "detect_odir_layout",
    "keywords_to_label",
    "split_datalist",
    "write_datalist_json",
]

logger = logging.getLogger(__name__)

CLASSES: tuple[str, ...] = ("N", "D", "G", "C", "A", "H", "M", "O")
"""The 8 ODIR classes, in the order of the label vector."""

CLASS_NAMES: dict[str, str] = {
    "N": "normal",
    "D": "diabetic retinopathy",
    "G": "glaucoma",
    "C": "cataract",
    "A": "age-related macular degeneration",
    "H": "hypertensive retinopathy",
    "M": "pathological myopia",
    "O": "other abnormalities",
}

UNUSABLE_KEYWORDS: tuple[str, ...] = (
    "anterior segment image",
    "no fundus image",
    "lens dust",
    "low image quality",
    "optic disk photographically invisible",
    "image offset",
)
"""Keywords that mark an image as unusable (matched as substrings of the normalised keywords)."""

# (class, substrings): the first row with a matching substring gives the class; no match gives "O".
_KEYWORD_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("N", ("normal fundus",)),
    ("D", ("diabetic retinopathy", "proliferative retinopathy")),
    ("G", ("glaucoma",)),
    ("C", ("cataract",)),
    ("A", ("age related macular degeneration",)),
    ("H", ("hypertensive retinopathy", "hypertension")),
    ("M", ("myopi",)),
)
_SEPARATORS = re.compile(r"[，,]")  # full-width comma U+FF0C (the official separator) and ASCII comma

_OFFICIAL_XLSX = "ODIR-5K_Training_Annotations(Updated)_V2.xlsx"
# (layout, annotations, images) relative to dataset_dir, in the order they are looked for
_LAYOUTS: tuple[tuple[str, str, str], ...] = (
    ("xlsx", _OFFICIAL_XLSX, "ODIR-5K_Training_Dataset"),
    ("xlsx", "ODIR-5K_Training_Annotations(Updated).xlsx", "ODIR-5K_Training_Dataset"),
    ("csv", "full_df.csv", "preprocessed_images"),
    ("xlsx", "ODIR-5K/ODIR-5K/data.xlsx", "ODIR-5K/ODIR-5K/Training Images"),
    ("xlsx", "ODIR-5K/data.xlsx", "ODIR-5K/Training Images"),
    ("xlsx", "data.xlsx", "Training Images"),
)
_HOW_TO_OBTAIN = (
    "ODIR-5K is not redistributed and medvq never downloads it: obtain it yourself from the ODIR-2019 challenge "
    "(odir2019.grand-challenge.org) or as the Kaggle dataset 'ocular-disease-recognition-odir5k', unpack it, and "
    "pass the unpacked folder as dataset_dir (in a bundle: --dataset_dir <folder>)."
)
_HEADER_ROWS = 5  # the header row is looked for among a table's first non-empty rows (a title row may sit above it)
_TABLE_COLUMNS = (
    "an ODIR-5K table has ID, Left-Fundus, Right-Fundus, Left-Diagnostic Keywords, Right-Diagnostic Keywords, "
    "N..O (and filename, labels in the Kaggle full_df.csv)"
)
_SKIPPED_CSV = "skipped_images.csv"
_DRAFT_SCALE = 8  # JPEGs are screened at 1/8 scale: libjpeg then decodes only each 8x8 block's mean (DC term)
# A 1/8-scale pixel is about the mean of an 8x8 block, so a draft pixel above threshold + margin stands for a
# full-resolution pixel above threshold. Colour conversion and clamping make the draft's brightest channel mean
# exceed the full image's by up to 8 levels (measured on 9,400 random dark JPEGs: checkers, saturated single
# channels, noise, blobs; where the full image's is <= 10 the draft's reached 12.7), hence the margin of 20.
# Anything darker is decided at full resolution, as the training loader decodes it: real fundus discs are far brighter.
_DRAFT_MARGIN = 20.0
_SCREEN_ROWS = 64  # rows tested at a time: bounds ForegroundAbove's float32 copy and stops at the first foreground
_SKIPPED_FIELDS = ("file", "patient_id", "eye", "reason", "keywords")


class OdirLayout(NamedTuple):
    """Where an ODIR-5K copy keeps its annotations and images (from :func:`detect_odir_layout`).

    Attributes:
        layout: ``"xlsx"`` (official table or Kaggle ``data.xlsx``) or ``"csv"`` (Kaggle ``full_df.csv``).
        annotations: absolute path of the annotation table.
        image_dir: absolute path of the folder holding the training JPEGs.
    """

    layout: str
    annotations: Path
    image_dir: Path


class OdirDatalist(NamedTuple):
    """Result of :func:`build_odir_datalist`.

    Attributes:
        train: datalist items ``{"image", "patient_id", "eye", "label", "keywords"}`` for training.
        val: items for validation; no patient appears in both ``train`` and ``val`` (with ``split_by="patient"``).
        skipped: one dict per image left out, ``{"file", "patient_id", "eye", "reason", "keywords"}``.
        layout: ``"xlsx"`` or ``"csv"``, the layout that was read.
        annotations: path of the annotation table that was read.
    """

    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    layout: str
    annotations: Path


class DatalistSplit(NamedTuple):
    """Result of :func:`split_datalist` (and of :func:`medvq.data.tokenizer_datalists`): ``train`` and ``val`` lists
    of datalist items; ``channels`` the images' channel count (what a tokenizer's ``in_channels`` must be) and
    ``class_names`` the names of the labels in order (None without labels)."""

    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    channels: int = 3
    class_names: list[str] | None = None


def _normalise_keyword(keyword: str) -> str:
    return " ".join(keyword.lower().replace("-", " ").split())


def _split_keywords(cell: Any) -> list[str]:
    if cell is None:
        return []
    text = str(cell)
    if text.strip().lower() == "nan":  # an empty cell read by another tool and saved back
        return []
    return [k for k in (_normalise_keyword(part) for part in _SEPARATORS.split(text)) if k]


def keywords_to_label(
    keywords: str | None, unusable_keywords: Sequence[str] = UNUSABLE_KEYWORDS
) -> tuple[list[float], list[str]]:
    """Map one eye's diagnostic keyword cell to a multi-hot label over :data:`CLASSES`.

    Args:
        keywords: the cell, keywords joined by "，" (U+FF0C) or ","; ``None`` or empty gives an all-zero label.
        unusable_keywords: substrings that mark an unusable image (default :data:`UNUSABLE_KEYWORDS`).

    Returns:
        ``(label, unusable)``: ``label`` is a list of 8 floats (0.0 / 1.0) in the order N, D, G, C, A, H, M, O
        (mapping table in the module docstring); ``unusable`` lists the normalised keywords that matched an
        unusable-image marker (empty when the image is usable). Unusable keywords never set a class.

    Example:
        >>> keywords_to_label("moderate non proliferative retinopathy，drusen")
        ([0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], [])
    """
    markers = [_normalise_keyword(m) for m in unusable_keywords]
    label = [0.0] * len(CLASSES)
    unusable: list[str] = []
    for keyword in _split_keywords(keywords):
        if any(marker in keyword for marker in markers):
            unusable.append(keyword)
            continue
        cls = next((c for c, subs in _KEYWORD_RULES if any(s in keyword for s in subs)), "O")
        label[CLASSES.index(cls)] = 1.0
    return label, unusable


def detect_odir_layout(
    dataset_dir: str | os.PathLike,
    annotations: str | os.PathLike | None = None,
    image_dir: str | os.PathLike | None = None,
) -> OdirLayout:
    """Find the annotation table and image folder of an ODIR-5K copy.

    Args:
        dataset_dir: the unpacked ODIR-5K folder (layouts in the module docstring).
        annotations: explicit annotation table (``.xlsx`` or ``.csv``), absolute or relative to ``dataset_dir``;
            default ``None`` detects it.
        image_dir: explicit image folder, absolute or relative to ``dataset_dir``; default ``None`` takes the one
            that goes with the detected (or given) table.

    Returns:
        The :class:`OdirLayout`.

    Raises:
        FileNotFoundError: ``dataset_dir``, the table or the image folder does not exist; the message names the
            path, lists the layouts looked for and says how to obtain ODIR-5K.
        ValueError: ``annotations`` is neither ``.xlsx`` nor ``.csv``.
    """
    root = Path(dataset_dir).expanduser().absolute()

    def fail(why: str) -> FileNotFoundError:
        looked = "\n".join(f"  - {root / a}  +  {root / i}/" for _, a, i in _LAYOUTS)
        return FileNotFoundError(f"ODIR-5K not found: {why}. Layouts looked for:\n{looked}\n{_HOW_TO_OBTAIN}")

    if not root.is_dir():
        kind = "is not a folder" if root.exists() else "does not exist"
        raise fail(f"dataset_dir '{root}' {kind}")
    if annotations is not None:
        table = root / Path(annotations).expanduser()
        if not table.is_file():
            raise fail(f"annotations '{table}' does not exist")
        suffix = table.suffix.lower()
        if suffix not in (".xlsx", ".csv"):
            raise ValueError(f"annotations must be an .xlsx or .csv file, got '{table}'.")
        layout = "csv" if suffix == ".csv" else "xlsx"
        default_images = [root / i for lay, a, i in _LAYOUTS if lay == layout and (root / a) == table]
        default_images += [table.parent / Path(i).name for lay, _, i in _LAYOUTS if lay == layout]
    else:
        found = [(lay, root / a, root / i) for lay, a, i in _LAYOUTS if (root / a).is_file()]
        if not found:
            raise fail(f"no annotation table under dataset_dir '{root}'")
        layout, table, _ = found[0]
        default_images = [found[0][2]]
    if image_dir is not None:
        images = root / Path(image_dir).expanduser()
        if not images.is_dir():
            raise fail(f"image_dir '{images}' does not exist")
    else:
        images = next((p for p in default_images if p.is_dir()), default_images[0])
        if not images.is_dir():
            raise fail(f"found '{table}' but not its image folder '{images}' (pass image_dir if it lives elsewhere)")
    return OdirLayout(layout, table, images)


def _column_key(name: Any) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


class _Table(NamedTuple):
    """An annotation table as read by :func:`_read_table`."""

    where: str  # "annotation table '<path>'" (+ ", sheet '<name>'" for an xlsx), the start of error messages
    header: list[str]  # normalised column names (:func:`_column_key`)
    rows: list[tuple[int, dict[str, Any]]]  # (row number in the file or sheet, values keyed by header)


def _numbered_rows(rows: Iterable[Sequence[Any]]) -> Iterator[tuple[int, list[Any]]]:
    """``(1-based row number, values)`` of each row that holds a value: empty rows are dropped, numbers stay true."""
    for number, row in enumerate(rows, start=1):
        values = list(row)
        if any(v not in (None, "") for v in values):
            yield number, values


def _header_index(rows: Sequence[tuple[int, list[Any]]], required: Sequence[str]) -> tuple[int | None, list[str]]:
    """Index in ``rows`` of the first of its first :data:`_HEADER_ROWS` rows naming every ``required`` column and
    ``[]``; or ``None`` and the columns missing from the row that names the most of them."""
    fewest = list(required)
    for index, (_, values) in enumerate(rows[:_HEADER_ROWS]):
        names = {_column_key(v) for v in values if v is not None}
        missing = [n for n in required if _column_key(n) not in names]
        if not missing:
            return index, []
        if len(missing) < len(fewest):
            fewest = missing
    return None, fewest


def _read_table(path: Path, required: Sequence[str]) -> _Table:
    """Read a csv, or the first sheet of an xlsx whose header names every ``required`` column.

    The header is the first of the first :data:`_HEADER_ROWS` non-empty rows that names them all (so a title row
    above it is fine); the rows below it are the data. A sheet other than the first is logged.

    Raises:
        ValueError: no header with the ``required`` columns (for an xlsx: in no sheet; the message lists each sheet
            and what it lacks), or no data row below the header.
    """
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(_numbered_rows(csv.reader(f)))
        where = f"annotation table '{path}'"
        index, missing = _header_index(rows, required)
        if index is None:
            raise ValueError(
                f"{where} lacks the column(s) {missing} (its header is looked for in the first {_HEADER_ROWS} "
                f"non-empty rows); {_TABLE_COLUMNS}. Pass the ODIR-5K table itself as annotations."
            )
    else:
        try:
            import openpyxl
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(f"reading '{path}' needs openpyxl: pip install openpyxl") from e
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
        looked: list[str] = []  # what each sheet before the chosen one lacks
        try:
            for sheet in workbook.worksheets:
                numbered = _numbered_rows(sheet.iter_rows(values_only=True))
                rows = list(islice(numbered, _HEADER_ROWS))  # a README sheet is not read further
                index, missing = _header_index(rows, required)
                if index is not None:
                    rows += numbered
                    break
                looked.append(f"sheet '{sheet.title}' " + (f"lacks the column(s) {missing}" if rows else "is empty"))
            else:
                raise ValueError(
                    f"annotation table '{path}' has no sheet whose header names the annotation columns "
                    f"{list(required)} (looked for in the first {_HEADER_ROWS} non-empty rows of each sheet): "
                    f"{'; '.join(looked) or 'it has no worksheet'}. Pass the ODIR-5K table itself as annotations "
                    f"(the official '{_OFFICIAL_XLSX}' or the Kaggle 'data.xlsx'), or put its rows, under a header "
                    "with these columns, in one sheet of this workbook."
                )
            where = f"annotation table '{path}', sheet '{sheet.title}'"
        finally:
            workbook.close()
        if looked:
            logger.info("ODIR-5K: reading sheet '%s' of '%s' (%s).", sheet.title, path, "; ".join(looked))
    header_row, names = rows[index]
    header = [_column_key(h) for h in names]
    data = rows[index + 1 :]
    if not data:
        raise ValueError(f"{where} has no data rows below its header (row {header_row}).")
    return _Table(where, header, [(number, dict(zip(header, values))) for number, values in data])


def _patient_id(where: str, row_number: int, value: Any) -> int:
    try:
        number = float(value)
        if number != int(number):
            raise ValueError
        return int(number)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{where}, row {row_number}: ID {value!r} is not an integer.") from None


def _csv_label(where: str, row_number: int, value: Any) -> list[float]:
    try:
        letters = ast.literal_eval(str(value))
    except (ValueError, SyntaxError):
        letters = None
    if isinstance(letters, str):
        letters = [letters]
    if not isinstance(letters, (list, tuple)) or not all(isinstance(x, str) and x in CLASSES for x in letters):
        raise ValueError(
            f"{where}, row {row_number}: labels {value!r} is not a list of ODIR classes "
            f"{list(CLASSES)} such as \"['N']\"."
        )
    return [1.0 if c in letters else 0.0 for c in CLASSES]


def _entries(layout: OdirLayout, unusable_keywords: Sequence[str]) -> list[dict[str, Any]]:
    """One entry per eye image named by the table: the datalist item fields plus ``row`` and ``reason`` (or None)."""
    required = ["ID", "Left-Diagnostic Keywords", "Right-Diagnostic Keywords"]
    if layout.layout != "csv":
        required += ["Left-Fundus", "Right-Fundus"]
    table = _read_table(layout.annotations, required)
    where = table.where
    if layout.layout == "csv" and "filename" not in table.header and "filepath" not in table.header:
        raise ValueError(f"{where} has neither a 'filename' nor a 'filepath' column.")
    entries = []
    for row_number, row in table.rows:
        pid = _patient_id(where, row_number, row.get("id"))
        if layout.layout == "csv":
            name = str(row.get("filename") or Path(str(row.get("filepath"))).name).strip()
            stem = Path(name).stem.lower()
            if name == str(row.get("leftfundus", "")).strip() or stem.endswith("left"):
                eye = "left"
            elif name == str(row.get("rightfundus", "")).strip() or stem.endswith("right"):
                eye = "right"
            else:
                raise ValueError(
                    f"{where}, row {row_number}: cannot tell the eye of '{name}' (expected "
                    "'<ID>_left.jpg' / '<ID>_right.jpg' or a match with Left-Fundus / Right-Fundus)."
                )
            eyes = [(eye, name)]
        else:
            eyes = [(eye, str(row.get(f"{eye}fundus") or f"{pid}_{eye}.jpg").strip()) for eye in ("left", "right")]
        for eye, name in eyes:
            cell = row.get(f"{eye}diagnostickeywords")
            keywords = "" if cell is None else str(cell).strip()
            label, unusable = keywords_to_label(keywords, unusable_keywords)
            if layout.layout == "csv" and row.get("labels") not in (None, ""):
                label = _csv_label(where, row_number, row["labels"])
            reason = None
            if unusable:
                reason = f"unusable image keyword: {', '.join(unusable)}"
            elif not any(label):
                reason = "no diagnostic keyword"
            entries.append(
                {
                    "image": str(layout.image_dir / name),
                    "patient_id": pid,
                    "eye": eye,
                    "label": label,
                    "keywords": keywords,
                    "row": row_number,
                    "reason": reason,
                }
            )
    return entries


def _has_foreground(image: Image.Image, threshold: float) -> bool:
    """Whether a pixel of ``image``, converted to RGB as the training loader does, has a channel mean above
    ``threshold``: :class:`medvq.transforms.ForegroundAbove`, the test of ``FundusBorderCropd``."""
    pixels = np.asarray(_loader_rgb(image))  # (H, W, 3) uint8
    if pixels.max() <= threshold:  # a channel mean never exceeds the largest channel: a black image ends here
        return False
    select = ForegroundAbove(threshold)
    for top in range(0, pixels.shape[0], _SCREEN_ROWS):
        if select(np.moveaxis(pixels[top : top + _SCREEN_ROWS], -1, 0)).any():  # (3, rows, W) -> (1, rows, W)
            return True
    return False


def _image_problem(path: str, threshold: float = FOREGROUND_THRESHOLD) -> str | None:
    """None when the file decodes and shows a field of view, else why not.

    JPEGs decode at 1/8 scale (draft mode): it still reads the whole compressed stream, so truncated files are
    caught, at a fraction of the full decoding time. The draft can average a tiny bright field of view below the
    threshold, so an image whose draft looks black is decoded again at full resolution before it is skipped: an
    image is skipped only when the full-resolution pixels the training loader reads have no foreground.
    """
    if not os.path.isfile(path):
        return "file not found"
    try:
        with Image.open(path) as image:
            full_size = image.size
            image.draft("RGB", (max(1, image.width // _DRAFT_SCALE), max(1, image.height // _DRAFT_SCALE)))
            image.load()
            reduced = image.size != full_size
            if _has_foreground(image, (threshold + _DRAFT_MARGIN) if reduced else threshold):
                return None
        if reduced:  # rare (near-black images only): a full decode settles it
            with Image.open(path) as image:
                if _has_foreground(image, threshold):
                    return None
    except Exception as e:  # noqa: BLE001  PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        return f"unreadable image: {type(e).__name__}: {e}"
    return (
        f"no field of view: no pixel's channel mean exceeds {threshold:g} (0-255 scale; all black?), so the border "
        "crop of the training preprocessing would fail on it"
    )


def _split_key(seed: int, unit: Any) -> str:
    # a hash, not a shuffled RNG: the assignment is the same on every platform and Python / numpy version
    return hashlib.sha256(f"{seed}:{unit}".encode()).hexdigest()


def split_datalist(
    items: Sequence[dict[str, Any]], val_fraction: float = 0.1, seed: int = 0, split_by: str = "patient"
) -> DatalistSplit:
    """Split datalist items into train and val, deterministically for a seed.

    Units (patients, or single images) are ranked by a SHA-256 hash of ``(seed, unit)``; the first
    ``round(val_fraction * units)`` go to val (at least one when ``val_fraction > 0`` and there are two or more
    units; never all of them). Item order is kept within each list.

    Args:
        items: datalist items; ``split_by="patient"`` needs a ``patient_id`` in each, ``"image"`` an ``image``.
        val_fraction: fraction of units in val, in ``[0, 1)``; default 0.1.
        seed: split seed; default 0.
        split_by: ``"patient"`` (both eyes of a patient in the same list; the ODIR rule) or ``"image"``.

    Returns:
        The :class:`DatalistSplit`.

    Raises:
        ValueError: ``val_fraction`` outside ``[0, 1)``, unknown ``split_by``, or an item lacking its key.
    """
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}.")
    if split_by not in ("patient", "image"):
        raise ValueError(f"split_by must be 'patient' or 'image', got {split_by!r}.")
    key = "patient_id" if split_by == "patient" else "image"
    missing = [i for i, item in enumerate(items) if key not in item]
    if missing:
        raise ValueError(f"split_by={split_by!r} needs a {key!r} in every item; item {missing[0]} has none.")
    units = sorted({item[key] for item in items}, key=lambda u: _split_key(seed, u))
    num_val = round(val_fraction * len(units))
    if val_fraction > 0 and len(units) > 1:
        num_val = min(max(num_val, 1), len(units) - 1)
    val_units = set(units[:num_val])
    return DatalistSplit(
        train=[item for item in items if item[key] not in val_units],
        val=[item for item in items if item[key] in val_units],
    )


def write_skipped_csv(path: Path, skipped: Sequence[dict[str, Any]], fields: Sequence[str] = _SKIPPED_FIELDS) -> None:
    """``skipped_images.csv``: one row per skipped image with ``fields`` (written even when nothing was skipped)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows({k: s.get(k, "") for k in fields} for s in skipped)


def build_odir_datalist(
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    split_by: str = "patient",
    image_dir: str | os.PathLike | None = None,
    annotations: str | os.PathLike | None = None,
    unusable_keywords: Sequence[str] = UNUSABLE_KEYWORDS,
    check_images: bool = True,
    foreground_threshold: float = FOREGROUND_THRESHOLD,
) -> OdirDatalist:
    """Build train / val datalists from an ODIR-5K folder, one item per usable eye image.

    Steps: 1. detect the layout (module docstring); 2. read one entry per eye (xlsx: from the first sheet that
    has the annotation columns), labels from that eye's keywords (csv: from its per-eye ``labels`` column);
    3. skip images with an unusable-image keyword, no keyword, a missing file or (``check_images``) a file that does
    not decode or has no field of view (no pixel whose channel mean exceeds ``foreground_threshold``: all black, or
    black but for JPEG noise), each with its reason; 4. split by patient.

    Args:
        dataset_dir: the unpacked ODIR-5K folder.
        output_dir: where ``skipped_images.csv`` (columns file, patient_id, eye, reason, keywords; written even when
            empty) goes; default ``None`` writes nothing (the list is still returned in ``skipped``).
        val_fraction: fraction of patients in val, in ``[0, 1)``; default 0.1.
        seed: split seed; default 0 (see :func:`split_datalist`).
        split_by: ``"patient"`` (default; both eyes in one split) or ``"image"``.
        image_dir: image folder, absolute or relative to ``dataset_dir``; default: the layout's own.
        annotations: annotation table (``.xlsx`` / ``.csv``), absolute or relative to ``dataset_dir``; default:
            detected.
        unusable_keywords: keyword substrings that make an image unusable; default :data:`UNUSABLE_KEYWORDS`.
        check_images: decode every listed image (JPEGs at 1/8 scale, in up to 8 threads; about 3 ms for a
            1411 x 1411 JPEG on one core) so a corrupt, truncated or all-black file is reported here instead of
            failing mid-epoch; an image that looks black at 1/8 scale is decoded again at full resolution (a tiny
            bright field of view can average away), so none that the training preprocessing accepts is skipped.
            Default True. False only checks that the files exist.
        foreground_threshold: channel-mean intensity (0-255 scale) a pixel must exceed to count as field of view;
            default :data:`medvq.transforms.FOREGROUND_THRESHOLD` (10), that of
            :func:`medvq.transforms.fundus_preprocessing`; pass its ``threshold`` when you change it there.

    Returns:
        :class:`OdirDatalist` whose items are ``{"image": absolute path, "patient_id": int, "eye": "left" |
        "right", "label": 8 floats multi-hot over N, D, G, C, A, H, M, O, "keywords": str}``.

    Raises:
        FileNotFoundError: no ODIR-5K at ``dataset_dir`` (the message says what was looked for and how to get it).
        ValueError: a malformed table (no sheet with the annotation columns, non-integer ID, bad ``labels``), bad
            ``val_fraction``, ``split_by`` or ``foreground_threshold``, or no usable image at all.

    Example:
        >>> odir = build_odir_datalist("/data/ODIR-5K", output_dir="runs/odir_vq")  # doctest: +SKIP
        >>> len(odir.train), len(odir.val), len(odir.skipped)  # doctest: +SKIP
    """
    if split_by not in ("patient", "image"):  # checked before the (slow) image checks
        raise ValueError(f"split_by must be 'patient' or 'image', got {split_by!r}.")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}.")
    if isinstance(unusable_keywords, str):
        raise TypeError("unusable_keywords must be a sequence of strings, not one string.")
    threshold = foreground_threshold
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold:
        raise ValueError(f"foreground_threshold must be a number >= 0 (0-255 intensity scale), got {threshold!r}.")
    layout = detect_odir_layout(dataset_dir, annotations=annotations, image_dir=image_dir)
    logger.info(
        "ODIR-5K: reading %s layout from '%s', images in '%s'", layout.layout, layout.annotations, layout.image_dir
    )
    entries = _entries(layout, unusable_keywords)

    # duplicated rows name one image twice: keep the first, report the others
    seen: set[str] = set()
    for entry in entries:
        if entry["reason"] is None and entry["image"] in seen:
            entry["reason"] = f"duplicate row: table row {entry['row']} names an image listed before"
        seen.add(entry["image"])

    to_check = [e for e in entries if e["reason"] is None]
    if check_images:
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
            problems = list(pool.map(_image_problem, [e["image"] for e in to_check], repeat(float(threshold))))
    else:
        problems = [None if os.path.isfile(e["image"]) else "file not found" for e in to_check]
    for entry, problem in zip(to_check, problems):
        entry["reason"] = problem

    fields = ("image", "patient_id", "eye", "label", "keywords")
    usable = [{k: e[k] for k in fields} for e in entries if e["reason"] is None]
    skipped = [
        {
            "file": e["image"],
            "patient_id": e["patient_id"],
            "eye": e["eye"],
            "reason": e["reason"],
            "keywords": e["keywords"],
        }
        for e in entries
        if e["reason"] is not None
    ]
    if output_dir is not None:
        write_skipped_csv(Path(output_dir) / _SKIPPED_CSV, skipped)
    if skipped:
        reasons = Counter(s["reason"].split(":")[0] for s in skipped)
        where = (
            f"listed in '{Path(output_dir) / _SKIPPED_CSV}'"
            if output_dir is not None
            else "pass output_dir to list them in a csv"
        )
        logger.warning(
            "ODIR-5K: skipped %d of %d images (%s); %s.",
            len(skipped),
            len(entries),
            ", ".join(f"{n} {r}" for r, n in reasons.most_common()),
            where,
        )
    if not usable:
        raise ValueError(
            f"no usable image in '{layout.annotations}' with images in '{layout.image_dir}': all {len(entries)} "
            f"were skipped (first reason: {skipped[0]['reason'] if skipped else 'the table has no rows'}). "
            "Check image_dir."
        )
    split = split_datalist(usable, val_fraction=val_fraction, seed=seed, split_by=split_by)
    logger.info("ODIR-5K: %d train and %d val images", len(split.train), len(split.val))
    return OdirDatalist(split.train, split.val, skipped, layout.layout, layout.annotations)


def write_datalist_json(
    path: str | os.PathLike,
    training: Sequence[dict[str, Any]],
    validation: Sequence[dict[str, Any]] = (),
    name: str = "",
    description: str = "",
    class_names: Sequence[str] | None = CLASSES,
    channels: int | None = None,
) -> Path:
    """Write a MONAI (Medical Decathlon style) datalist JSON, read back by ``monai.data.load_decathlon_datalist``.

    The file is ``{"name", "description", "labels": {"0": "N", ...}, "numTraining", "numValidation", "training":
    [...], "validation": [...]}``, written atomically. Read it with
    ``load_decathlon_datalist(path, is_segmentation=False, data_list_key="training" | "validation")``: image paths
    stay absolute; a relative ``image`` would be joined to the JSON's folder. ``is_segmentation=False`` keeps a
    string ``label`` from being read as a path (list labels, as here, are kept either way).

    Args:
        path: JSON file to write (parent folders are created).
        training: items for the ``"training"`` key (e.g. :attr:`OdirDatalist.train`).
        validation: items for the ``"validation"`` key; default none.
        name: dataset name stored in the file; default "".
        description: free text stored in the file; default "".
        class_names: names of the label vector's entries, stored as ``"labels": {"0": ..., ...}``; default
            :data:`CLASSES`; ``None`` leaves the key out.
        channels: the images' channel count, stored as ``"channels"`` (read back by the bundles under DDP);
            default None leaves the key out.

    Returns:
        The path written.

    Raises:
        TypeError: an item is not a dict or is not JSON-serialisable.
    """
    for key, items in (("training", training), ("validation", validation)):
        bad = next((i for i, item in enumerate(items) if not isinstance(item, dict)), None)
        if bad is not None:
            raise TypeError(f"{key} item {bad} must be a dict, got {type(items[bad]).__name__}.")
    content: dict[str, Any] = {"name": name, "description": description}
    if class_names is not None:
        content["labels"] = {str(i): c for i, c in enumerate(class_names)}
    if channels is not None:
        content["channels"] = int(channels)
    content |= {
        "numTraining": len(training),
        "numValidation": len(validation),
        "training": list(training),
        "validation": list(validation),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(content, indent=1)  # raises TypeError naming the offending type before anything is written
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False, encoding="utf-8") as f:
        f.write(text)
    os.replace(f.name, path)
    return path
