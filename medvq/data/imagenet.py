"""ImageNet-100 (the CMC subset of Tian et al. 2019): the 100 classes, and datalists from an ImageNet-1k tree.

:data:`IMAGENET100` lists the classes in the order of the CMC list (``shared/reference/imagenet100.tsv``, shipped here
as code so no data file has to be installed), each ``(wnid, ImageNet-1k index, name)``. Labels are 0..99 in
**sorted-wnid** order (:data:`IMAGENET100_WNIDS`), as ``torchvision.datasets.ImageFolder`` numbers the classes.

:func:`build_imagenet100_datalist` reads an ImageNet-1k layout:

- ``train/<wnid>/*.JPEG`` (about 1,300 images a class; 126,689 for the 100 classes);
- ``val/`` either by class (``val/<wnid>/*.JPEG``, 50 a class) or flat (``val/ILSVRC2012_val_<n>.JPEG``) with a
  ground-truth file: Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString`` whose first word is the wnid),
  found in the root or named with ``val_labels``, or any CSV / TSV / whitespace file of ``<file name> <wnid>`` lines;
- classes outside the 100 are ignored; a class of the 100 missing from ``train`` (or from ``val``) is an error naming
  the missing wnids and their names.

Every file is checked by reading its header (PIL, no decoding): unreadable files and non-images are skipped, counted
and listed in ``output_dir/skipped_images.csv``. ``output_dir/datalist.json`` records the lists
(``load_decathlon_datalist`` reads it back).
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

from PIL import Image

from medvq.data.odir import write_datalist_json, write_skipped_csv

__all__ = ["IMAGENET100", "IMAGENET100_WNIDS", "ImageNetDatalist", "build_imagenet100_datalist",
           "make_imagenet100_tree"]

logger = logging.getLogger(__name__)

IMAGENET100: tuple[tuple[str, int, str], ...] = (
    ("n02869837", 452, "bonnet, poke bonnet"),
    ("n01749939", 64, "green mamba"),
    ("n02488291", 374, "langur"),
    ("n02107142", 236, "Doberman, Doberman pinscher"),
    ("n13037406", 993, "gyromitra"),
    ("n02091831", 176, "Saluki, gazelle hound"),
    ("n04517823", 882, "vacuum, vacuum cleaner"),
    ("n04589890", 904, "window screen"),
    ("n03062245", 503, "cocktail shaker"),
    ("n01773797", 74, "garden spider, Aranea diademata"),
    ("n01735189", 57, "garter snake, grass snake"),
    ("n07831146", 959, "carbonara"),
    ("n07753275", 953, "pineapple, ananas"),
    ("n03085013", 508, "computer keyboard, keypad"),
    ("n04485082", 872, "tripod"),
    ("n02105505", 228, "komondor"),
    ("n01983481", 122, "American lobster, Northern lobster, Maine lobster, Homarus americanus"),
    ("n02788148", 421, "bannister, banister, balustrade, balusters, handrail"),
    ("n03530642", 599, "honeycomb"),
    ("n04435653", 858, "tile roof"),
    ("n02086910", 157, "papillon"),
    ("n02859443", 449, "boathouse"),
    ("n13040303", 994, "stinkhorn, carrion fungus"),
    ("n03594734", 608, "jean, blue jean, denim"),
    ("n02085620", 151, "Chihuahua"),
    ("n02099849", 209, "Chesapeake Bay retriever"),
    ("n01558993", 15, "robin, American robin, Turdus migratorius"),
    ("n04493381", 876, "tub, vat"),
    ("n02109047", 246, "Great Dane"),
    ("n04111531", 766, "rotisserie"),
    ("n02877765", 455, "bottlecap"),
    ("n04429376", 857, "throne"),
    ("n02009229", 131, "little blue heron, Egretta caerulea"),
    ("n01978455", 119, "rock crab, Cancer irroratus"),
    ("n02106550", 234, "Rottweiler"),
    ("n01820546", 90, "lorikeet"),
    ("n01692333", 45, "Gila monster, Heloderma suspectum"),
    ("n07714571", 936, "head cabbage"),
    ("n02974003", 479, "car wheel"),
    ("n02114855", 272, "coyote, prairie wolf, brush wolf, Canis latrans"),
    ("n03785016", 665, "moped"),
    ("n03764736", 653, "milk can"),
    ("n03775546", 659, "mixing bowl"),
    ("n02087046", 158, "toy terrier"),
    ("n07836838", 960, "chocolate sauce, chocolate syrup"),
    ("n04099969", 765, "rocking chair, rocker"),
    ("n04592741", 908, "wing"),
    ("n03891251", 703, "park bench"),
    ("n02701002", 407, "ambulance"),
    ("n03379051", 560, "football helmet"),
    ("n02259212", 317, "leafhopper"),
    ("n07715103", 938, "cauliflower"),
    ("n03947888", 724, "pirate, pirate ship"),
    ("n04026417", 748, "purse"),
    ("n02326432", 331, "hare"),
    ("n03637318", 619, "lampshade, lamp shade"),
    ("n01980166", 120, "fiddler crab"),
    ("n02113799", 267, "standard poodle"),
    ("n02086240", 155, "Shih-Tzu"),
    ("n03903868", 708, "pedestal, plinth, footstall"),
    ("n02483362", 368, "gibbon, Hylobates lar"),
    ("n04127249", 772, "safety pin"),
    ("n02089973", 167, "English foxhound"),
    ("n03017168", 494, "chime, bell, gong"),
    ("n02093428", 180, "American Staffordshire terrier, Staffordshire terrier, American pit bull terrier, pit bull terrier"),
    ("n02804414", 431, "bassinet"),
    ("n02396427", 342, "wild boar, boar, Sus scrofa"),
    ("n04418357", 854, "theater curtain, theatre curtain"),
    ("n02172182", 305, "dung beetle"),
    ("n01729322", 54, "hognose snake, puff adder, sand viper"),
    ("n02113978", 268, "Mexican hairless"),
    ("n03787032", 667, "mortarboard"),
    ("n02089867", 166, "Walker hound, Walker foxhound"),
    ("n02119022", 277, "red fox, Vulpes vulpes"),
    ("n03777754", 662, "modem"),
    ("n04238763", 798, "slide rule, slipstick"),
    ("n02231487", 313, "walking stick, walkingstick, stick insect"),
    ("n03032252", 498, "cinema, movie theater, movie theatre, movie house, picture palace"),
    ("n02138441", 299, "meerkat, mierkat"),
    ("n02104029", 222, "kuvasz"),
    ("n03837869", 682, "obelisk"),
    ("n03494278", 593, "harmonica, mouth organ, harp, mouth harp"),
    ("n04136333", 775, "sarong"),
    ("n03794056", 674, "mousetrap"),
    ("n03492542", 592, "hard disc, hard disk, fixed disk"),
    ("n02018207", 137, "American coot, marsh hen, mud hen, water hen, Fulica americana"),
    ("n04067472", 758, "reel"),
    ("n03930630", 717, "pickup, pickup truck"),
    ("n03584829", 606, "iron, smoothing iron"),
    ("n02123045", 281, "tabby, tabby cat"),
    ("n04229816", 796, "ski mask"),
    ("n02100583", 211, "vizsla, Hungarian pointer"),
    ("n03642806", 620, "laptop, laptop computer"),
    ("n04336792", 830, "stretcher"),
    ("n03259280", 544, "Dutch oven"),
    ("n02116738", 275, "African hunting dog, hyena dog, Cape hunting dog, Lycaon pictus"),
    ("n02108089", 242, "boxer"),
    ("n03424325", 570, "gasmask, respirator, gas helmet"),
    ("n01855672", 99, "goose"),
    ("n02090622", 169, "borzoi, Russian wolfhound"),
)
"""The 100 CMC classes in the CMC list's order: ``(wnid, index in ImageNet-1k's sorted 1,000 wnids, name)``."""

IMAGENET100_WNIDS: tuple[str, ...] = tuple(sorted(w for w, _, _ in IMAGENET100))
"""The class of label ``i`` is ``IMAGENET100_WNIDS[i]``: the wnids sorted (ImageFolder's order)."""

_NAMES = {w: n for w, _, n in IMAGENET100}
_SUFFIXES = (".jpeg", ".jpg", ".png")
_KAGGLE_VAL = "LOC_val_solution.csv"


class ImageNetDatalist(NamedTuple):
    """Result of :func:`build_imagenet100_datalist`.

    Attributes:
        train, val: items ``{"image": absolute path, "label": 0..99, "wnid": ...}``.
        skipped: ``{"file", "reason"}`` of each file left out.
        class_names: the wnids of labels 0..99 (:data:`IMAGENET100_WNIDS`).
        val_layout: ``"folders"`` or the ground-truth file a flat ``val/`` was read with.
    """

    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    class_names: list[str]
    val_layout: str


def _missing(wnids: set[str], where: Path) -> str:
    shown = ", ".join(f"{w} ({_NAMES[w]})" for w in sorted(wnids)[:8])
    more = f" and {len(wnids) - 8} more" if len(wnids) > 8 else ""
    return (f"{len(wnids)} of the 100 ImageNet-100 classes have no folder with images in '{where}': {shown}{more}. "
            "Give the root of a complete ImageNet-1k tree (train/<wnid>/*.JPEG; medvq never downloads it), or copy "
            "the missing classes.")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _SUFFIXES)


def _problem(path: Path) -> str | None:
    try:
        with Image.open(path) as image:  # the header only: format and size, no decoding
            width, height = image.size
    except Exception as error:  # noqa: BLE001  PIL raises many types; the reason names it
        return f"unreadable: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return None if width > 0 and height > 0 else f"empty image: {width}x{height}"


def _val_labels(root: Path, val_labels: str | os.PathLike | None) -> tuple[dict[str, str], str]:
    """``file stem -> wnid`` of a flat ``val/`` folder, and the file it came from."""
    path = Path(val_labels) if val_labels else root / _KAGGLE_VAL
    if not path.is_file():
        raise FileNotFoundError(
            f"'{root / 'val'}' holds no <wnid> folders, and no ground-truth file was found for its flat layout: put "
            f"Kaggle's {_KAGGLE_VAL} in '{root}' or pass val_labels=<file of '<image file> <wnid>' lines> "
            f"(looked for '{path}')."
        )
    labels: dict[str, str] = {}
    with open(path, newline="") as f:
        text = f.read()
    dialect = "excel-tab" if "\t" in text.splitlines()[0] else "excel"
    rows = list(csv.reader(text.splitlines(), dialect=dialect))
    if rows and rows[0] and rows[0][0] == "ImageId":  # Kaggle: ImageId,PredictionString ("n01751748 x y x y ...")
        rows = [[row[0], row[1].split()[0]] for row in rows[1:] if len(row) > 1 and row[1].split()]
    for row in rows:
        if len(row) == 1:
            row = row[0].split()
        if len(row) < 2 or not row[1].strip().startswith("n"):
            continue
        labels[Path(row[0].strip()).stem] = row[1].strip()
    if not labels:
        raise ValueError(f"the ground-truth file '{path}' holds no '<image file> <wnid>' line.")
    return labels, path.name


def build_imagenet100_datalist(
    root: str | os.PathLike, output_dir: str | os.PathLike | None = None, val_labels: str | os.PathLike | None = None,
) -> ImageNetDatalist:
    """ImageNet-100 train / val datalists of an ImageNet-1k tree (module docstring: layouts, checks, outputs).

    Args:
        root: the folder holding ``train/`` and ``val/``.
        output_dir: where ``datalist.json`` and ``skipped_images.csv`` go; None writes nothing.
        val_labels: the ground truth of a flat ``val/`` (default: ``root/LOC_val_solution.csv``).

    Raises:
        FileNotFoundError: no ``train/`` or ``val/`` folder, or a flat ``val/`` without a ground-truth file.
        ValueError: classes of the 100 missing (named), or no readable image left.
    """
    root = Path(root).expanduser().absolute()
    train_dir, val_dir = root / "train", root / "val"
    for folder in (train_dir, val_dir):
        if not folder.is_dir():
            raise FileNotFoundError(
                f"'{folder}' is not a folder: an ImageNet-1k root holds train/<wnid>/*.JPEG and val/ (by class, or "
                f"flat with {_KAGGLE_VAL}); got root '{root}'."
            )
    label = {w: i for i, w in enumerate(IMAGENET100_WNIDS)}
    skipped: list[dict[str, Any]] = []

    def items_of(files: list[tuple[Path, str]]) -> list[dict[str, Any]]:
        out = []
        for path, wnid in files:
            problem = _problem(path)
            if problem:
                skipped.append({"file": str(path), "reason": problem})
            else:
                out.append({"image": str(path), "label": label[wnid], "wnid": wnid})
        return out

    present = {p.name for p in train_dir.iterdir() if p.is_dir() and p.name in label and _images(p)}
    if len(present) < len(label):
        raise ValueError(_missing(set(label) - present, train_dir))
    train = items_of([(p, w) for w in IMAGENET100_WNIDS for p in _images(train_dir / w)])

    val_folders = {p.name for p in val_dir.iterdir() if p.is_dir() and p.name.startswith("n")}
    if val_folders:
        missing = set(label) - {w for w in val_folders if w in label and _images(val_dir / w)}
        if missing:
            raise ValueError(_missing(missing, val_dir))
        layout = "folders"
        val = items_of([(p, w) for w in IMAGENET100_WNIDS for p in _images(val_dir / w)])
    else:
        truth, layout = _val_labels(root, val_labels)
        files = [(p, truth.get(p.stem)) for p in _images(val_dir)]
        unlabelled = [p for p, w in files if w is None]
        for p in unlabelled:
            skipped.append({"file": str(p), "reason": f"no label in {layout}"})
        chosen = [(p, w) for p, w in files if w in label]
        missing = set(label) - {w for _, w in chosen}
        if missing:
            raise ValueError(_missing(missing, val_dir))
        val = items_of(sorted(chosen, key=lambda pw: (label[pw[1]], pw[0].name)))
    if output_dir is not None:
        write_skipped_csv(Path(output_dir) / "skipped_images.csv", skipped, ("file", "reason"))
        write_datalist_json(Path(output_dir) / "datalist.json", train, val, name="ImageNet-100",
                            description=f"ImageNet-100 (CMC) of '{root}', val layout: {layout}",
                            class_names=list(IMAGENET100_WNIDS), channels=3)
    if skipped:
        reasons = Counter(s["reason"].split(":")[0] for s in skipped)
        logger.warning("ImageNet-100: skipped %d files (%s)%s.", len(skipped),
                       ", ".join(f"{n} {r}" for r, n in reasons.most_common()),
                       f", listed in '{Path(output_dir) / 'skipped_images.csv'}'" if output_dir is not None else "")
    if not train or not val:
        raise ValueError(f"no readable ImageNet-100 image left in '{root}' (train {len(train)}, val {len(val)}).")
    logger.info("ImageNet-100: %d train and %d val images of %d classes (val: %s)", len(train), len(val),
                len(label), layout)
    return ImageNetDatalist(train, val, skipped, list(IMAGENET100_WNIDS), layout)


_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")  # scikit-image's colour photographs (BSD-licensed)


def make_imagenet100_tree(
    root: str | os.PathLike, train_per_class: int = 2, val_per_class: int = 1, val_layout: str = "folders",
    size: int = 96, seed: int = 0,
) -> Path:
    """Write a small ImageNet-shaped tree of the 100 classes, for tests and the quickstart (not ImageNet).

    Every image is a seeded random crop (a random aspect ratio, so the shorter-side resize is exercised) of one of
    scikit-image's colour photographs (astronaut, chelsea, coffee, rocket), saved as ``.JPEG``:
    ``train/<wnid>/<wnid>_<i>.JPEG`` and ``val/<wnid>/ILSVRC2012_val_<n>.JPEG`` (``val_layout="folders"``) or a flat
    ``val/`` with Kaggle's ``LOC_val_solution.csv`` in ``root`` (``"flat"``).

    Args:
        root: the folder to create (must not hold a ``train/`` folder yet).
        train_per_class, val_per_class: images per class, >= 1.
        val_layout: ``"folders"`` or ``"flat"``.
        size: the shorter side of the images, >= 8.
        seed: the crops' seed.

    Returns:
        ``root``.
    """
    import numpy as np
    import skimage.data

    if val_layout not in ("folders", "flat"):
        raise ValueError(f"val_layout must be 'folders' or 'flat', got {val_layout!r}.")
    for name, value in (("train_per_class", train_per_class), ("val_per_class", val_per_class)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    root = Path(root)
    if (root / "train").exists():
        raise FileExistsError(f"'{root / 'train'}' exists: make_imagenet100_tree writes a new tree only.")
    rng = np.random.default_rng(seed)
    photos = [getattr(skimage.data, n)() for n in _PHOTOS]

    def write(path: Path) -> None:
        photo = photos[int(rng.integers(len(photos)))]
        h, w = photo.shape[:2]
        ch = int(rng.integers(h // 3, h // 2))
        cw = int(min(w, ch * rng.uniform(1.0, 1.5)))
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = Image.fromarray(photo[top:top + ch, left:left + cw])
        scale = size / min(crop.size)
        crop = crop.resize((max(size, round(crop.size[0] * scale)), max(size, round(crop.size[1] * scale))))
        path.parent.mkdir(parents=True, exist_ok=True)
        crop.save(path, format="JPEG", quality=90)

    rows, n = [], 0
    for wnid in IMAGENET100_WNIDS:
        for i in range(train_per_class):
            write(root / "train" / wnid / f"{wnid}_{i}.JPEG")
        for _ in range(val_per_class):
            n += 1
            name = f"ILSVRC2012_val_{n:08d}"
            write(root / "val" / (wnid if val_layout == "folders" else "") / f"{name}.JPEG")
            rows.append((name, wnid))
    if val_layout == "flat":
        with open(root / _KAGGLE_VAL, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["ImageId", "PredictionString"])
            writer.writerows((name, f"{wnid} 0 0 10 10") for name, wnid in rows)
    return root
