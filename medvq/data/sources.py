"""Where a bundle's training data comes from: an ODIR-5K folder, a folder or datalist of images of any modality, or
(quickstart) generated images.

Bundles call :func:`tokenizer_datalists` once; it writes the split it used to ``output_dir/datalist.json`` so a run
can be audited and re-run on exactly the same images.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch.distributed as dist

from medvq.data.imagenet import build_imagenet100_datalist
from medvq.data.images import build_image_datalist
from medvq.data.odir import CLASSES, DatalistSplit, build_odir_datalist, split_datalist, write_datalist_json
from medvq.data.synthetic import make_fundus_dataset
from medvq.utils.distributed import is_distributed, rank

__all__ = ["DATA_FORMATS", "tokenizer_datalists"]

logger = logging.getLogger(__name__)

DATA_FORMATS: tuple[str, ...] = ("odir", "images", "imagenet100")
"""``--data_format`` of the bundles: ``odir`` (an ODIR-5K root, or a datalist of fundus photographs with their
label vectors), ``images`` (a folder or datalist of PNG / JPEG / DICOM / NIfTI images of any modality) or
``imagenet100`` (an ImageNet-1k root filtered to the 100 CMC classes, :func:`medvq.data.build_imagenet100_datalist`;
its own train / val split)."""


def tokenizer_datalists(
    dataset_dir: str | Path | None,
    output_dir: str | Path,
    val_fraction: float = 0.1,
    seed: int = 0,
    synthetic_images: int = 0,
    synthetic_size: int = 96,
    datalist: str | Path | None = None,
    data_format: str = "odir",
    spatial_dims: int = 2,
    slice_axis: int = 2,
    channels: int | None = None,
    group_by: str = "folder",
    labels: bool = True,
) -> DatalistSplit:
    """Train / validation datalists for a tokenizer bundle.

    Args:
        dataset_dir: ``data_format="odir"``: an ODIR-5K root (official xlsx or Kaggle csv layout, see
            :func:`build_odir_datalist`); ``"images"``: a folder scanned recursively for images of any modality
            (:func:`medvq.data.build_image_datalist`). Empty or None with no ``datalist`` uses generated images
            when ``synthetic_images > 0``.
        output_dir: the run's output folder: ``datalist.json``, ``skipped_images.csv`` and the generated images go
            there.
        val_fraction: fraction of patients in the validation split. Default 0.1.
        seed: split (and generation) seed.
        synthetic_images: number of generated fundus images (:func:`make_fundus_dataset`) used when no
            ``dataset_dir`` is given; 0 makes a missing ``dataset_dir`` an error. Default 0.
        synthetic_size: side of the generated images in pixels. Default 96.
        datalist: a MONAI Decathlon-style datalist JSON (``{"training": [{"image": ...}], "validation"?: [...]}``,
            paths relative to its folder), read with MONAI's loader; exclusive with ``dataset_dir``. For
            ``"odir"`` its items are fundus photographs whose ``label`` (ODIR's 8-entry vector) is kept as given.
        data_format: ``"odir"`` (default), ``"images"`` or ``"imagenet100"`` (:data:`DATA_FORMATS`).
        spatial_dims, slice_axis, channels, group_by, labels: ``"images"`` only, as
            :func:`medvq.data.build_image_datalist` (2D slices of volumes along ``slice_axis``, or 3D volumes;
            ``channels`` None follows the data; the split unit; class labels from the folder or datalist).

    Returns:
        :class:`~medvq.data.DatalistSplit` with the images' ``channels`` (ODIR: 3) and ``class_names`` (ODIR:
        :data:`~medvq.data.CLASSES`; images: the label folders or datalist labels, None without).

    Under DDP only rank 0 reads the annotations, checks the images, generates data and writes ``datalist.json``;
    the other ranks wait and read that file, so no two processes write the same files.

    Raises:
        FileNotFoundError: no ``dataset_dir`` / ``datalist`` and no synthetic data asked for, or a ``dataset_dir``
            that holds no ODIR-5K layout (the message names the path and says how to obtain ODIR-5K) or no image.
        ValueError: an unknown ``data_format``, both ``dataset_dir`` and ``datalist``, or what
            :func:`~medvq.data.build_image_datalist` refuses (named).
    """
    if data_format not in DATA_FORMATS:
        raise ValueError(
            f"data_format must be one of {list(DATA_FORMATS)}, got {data_format!r}: 'odir' for an ODIR-5K root, "
            "'images' for a folder or datalist of PNG / JPEG / DICOM / NIfTI images, 'imagenet100' for an "
            "ImageNet-1k root."
        )
    if dataset_dir and datalist:
        raise ValueError(
            f"give --dataset_dir ({dataset_dir!r}) or --datalist ({datalist!r}), not both: the datalist lists its "
            "own images."
        )
    image_options = {"spatial_dims": spatial_dims, "slice_axis": slice_axis, "channels": channels,
                     "group_by": group_by, "labels": labels}
    args = (dataset_dir, datalist, data_format, image_options, Path(output_dir), val_fraction, seed,
            synthetic_images, synthetic_size)
    if not is_distributed():
        return _build(*args)
    split, error = None, None
    if rank() == 0:
        try:
            split = _build(*args)
        except Exception as exc:  # re-raised below, after releasing the other ranks
            error = exc
    failed = [error is not None]
    dist.broadcast_object_list(failed, src=0)  # also the barrier: rank 0 has written datalist.json
    if error is not None:
        raise error
    if failed[0]:
        raise RuntimeError("building the datalists failed on rank 0; see its error.")
    if split is None:
        content = json.loads((Path(output_dir) / "datalist.json").read_text())
        names = content.get("labels")
        split = DatalistSplit(
            content["training"], content.get("validation", []), channels=int(content.get("channels", 3)),
            class_names=[names[str(i)] for i in range(len(names))] if names else None,
        )
    return split


def _build(
    dataset_dir: str | Path | None, datalist: str | Path | None, data_format: str, image_options: dict,
    output_dir: Path, val_fraction: float, seed: int, synthetic_images: int, synthetic_size: int,
) -> DatalistSplit:
    output_dir.mkdir(parents=True, exist_ok=True)
    if data_format == "images" and (dataset_dir or datalist):
        result = build_image_datalist(
            dataset_dir=dataset_dir or None, datalist=datalist or None, val_fraction=val_fraction, seed=seed,
            output_dir=output_dir, **image_options,
        )
        class_names = result.class_names
        if class_names is None and not any("label" in item for item in (*result.train, *result.val)):
            # no classes (a datalist without labels): one class, so a generator trains unconditionally on them
            for item in (*result.train, *result.val):
                item["label"] = 0
            class_names = ["image"]
            write_datalist_json(output_dir / "datalist.json", result.train, result.val, name="images",
                                description=f"{result.source}, one class", class_names=class_names,
                                channels=result.channels)
        return DatalistSplit(result.train, result.val, channels=result.channels, class_names=class_names)
    if data_format == "imagenet100" and dataset_dir:
        result = build_imagenet100_datalist(dataset_dir, output_dir=output_dir)
        return DatalistSplit(result.train, result.val, channels=3, class_names=result.class_names)
    if data_format == "imagenet100" and not datalist:
        raise FileNotFoundError(
            "dataset_dir is empty: pass --dataset_dir <ImageNet-1k root> (train/<wnid>/*.JPEG and val/, by class or "
            "flat with LOC_val_solution.csv; medvq never downloads ImageNet), or --datalist <datalist.json> with "
            "class-index labels."
        )
    if datalist and data_format == "imagenet100":
        result = build_image_datalist(datalist=datalist, spatial_dims=2, val_fraction=val_fraction, seed=seed,
                                      output_dir=output_dir, channels=3)
        return DatalistSplit(result.train, result.val, channels=3, class_names=result.class_names)
    if datalist:
        # fundus photographs listed by the user: checked and split as any image datalist, their ODIR label
        # vectors kept as given (labels=False: no class indices are derived)
        result = build_image_datalist(
            datalist=datalist, spatial_dims=2, val_fraction=val_fraction, seed=seed, output_dir=output_dir,
            labels=False, channels=3,
        )
        split = DatalistSplit(result.train, result.val, channels=3, class_names=list(CLASSES))
        source = f"fundus photographs of {result.source}"
    elif dataset_dir:
        result = build_odir_datalist(dataset_dir, output_dir=output_dir, val_fraction=val_fraction, seed=seed)
        split = DatalistSplit(result.train, result.val, channels=3, class_names=list(CLASSES))
        source = f"ODIR-5K at {dataset_dir} ({result.layout} layout)"
    elif synthetic_images > 0 and data_format == "odir":
        items = make_fundus_dataset(output_dir / "synthetic_data", num_images=synthetic_images,
                                    image_size=synthetic_size, seed=seed)
        split, source = split_datalist(items, val_fraction=val_fraction, seed=seed), "generated fundus images"
        split = DatalistSplit(split.train, split.val, channels=3, class_names=list(CLASSES))
    elif data_format == "images":
        raise FileNotFoundError(
            "no images given: pass --dataset_dir <folder> (PNG, JPEG, DICOM files or series folders, NIfTI; "
            "sub-folders included, a class per folder) or --datalist <datalist.json> (MONAI Decathlon style: "
            '{"training": [{"image": "relative/or/absolute/path"}], "validation": [...]}). '
            "`python -m medvq.data.examples <folder>` writes a small CT / MR dataset from files that ship with "
            "pydicom and nibabel."
        )
    else:
        raise FileNotFoundError(
            "dataset_dir is empty: pass --dataset_dir <ODIR-5K root> (the folder holding the official "
            "'ODIR-5K_Training_Annotations(Updated)_V2.xlsx' or Kaggle's 'full_df.csv'; ODIR-5K comes from the "
            "ODIR-2019 challenge or the Kaggle dataset 'ocular-disease-recognition-odir5k', medvq never downloads "
            "it), or --datalist <datalist.json> of fundus photographs, or add configs/quickstart.json to train on "
            "generated images."
        )
    if not split.train:
        raise ValueError(f"no training images left in {source}: see {output_dir / 'skipped_images.csv'}.")
    write_datalist_json(output_dir / "datalist.json", split.train, split.val, description=source, channels=3)
    logger.info("data: %s, %d training and %d validation images", source, len(split.train), len(split.val))
    return split
