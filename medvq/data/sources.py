"""Where a bundle's training data comes from: a real ODIR-5K folder, or (quickstart) generated fundus images.

Bundles call :func:`tokenizer_datalists` once; it writes the split it used to ``output_dir/datalist.json`` so a run
can be audited and re-run on exactly the same images.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch.distributed as dist

from medvq.data.odir import DatalistSplit, build_odir_datalist, split_datalist, write_datalist_json
from medvq.data.synthetic import make_fundus_dataset
from medvq.utils.distributed import is_distributed, rank

__all__ = ["tokenizer_datalists"]

logger = logging.getLogger(__name__)


def tokenizer_datalists(
    dataset_dir: str | Path | None,
    output_dir: str | Path,
    val_fraction: float = 0.1,
    seed: int = 0,
    synthetic_images: int = 0,
    synthetic_size: int = 96,
) -> DatalistSplit:
    """Train / validation datalists for a tokenizer bundle.

    Args:
        dataset_dir: an ODIR-5K root (official xlsx or Kaggle csv layout, see :func:`build_odir_datalist`); empty or
            None uses generated images when ``synthetic_images > 0``.
        output_dir: the run's output folder: ``datalist.json``, ``skipped_images.csv`` and the generated images go
            there.
        val_fraction: fraction of patients in the validation split. Default 0.1.
        seed: split (and generation) seed.
        synthetic_images: number of generated fundus images (:func:`make_fundus_dataset`) used when no
            ``dataset_dir`` is given; 0 makes a missing ``dataset_dir`` an error. Default 0.
        synthetic_size: side of the generated images in pixels. Default 96.

    Under DDP only rank 0 reads the annotations, checks the images, generates data and writes ``datalist.json``;
    the other ranks wait and read that file, so no two processes write the same files.

    Raises:
        FileNotFoundError: no ``dataset_dir`` and no synthetic data asked for, or a ``dataset_dir`` that holds no
            ODIR-5K layout (the message names the path and says how to obtain ODIR-5K).
    """
    if not is_distributed():
        return _build(dataset_dir, Path(output_dir), val_fraction, seed, synthetic_images, synthetic_size)
    split, error = None, None
    if rank() == 0:
        try:
            split = _build(dataset_dir, Path(output_dir), val_fraction, seed, synthetic_images, synthetic_size)
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
        split = DatalistSplit(content["training"], content.get("validation", []))
    return split


def _build(
    dataset_dir: str | Path | None, output_dir: Path, val_fraction: float, seed: int, synthetic_images: int,
    synthetic_size: int,
) -> DatalistSplit:
    output_dir.mkdir(parents=True, exist_ok=True)
    if dataset_dir:
        result = build_odir_datalist(dataset_dir, output_dir=output_dir, val_fraction=val_fraction, seed=seed)
        split, source = DatalistSplit(result.train, result.val), f"ODIR-5K at {dataset_dir} ({result.layout} layout)"
    elif synthetic_images > 0:
        items = make_fundus_dataset(output_dir / "synthetic_data", num_images=synthetic_images,
                                    image_size=synthetic_size, seed=seed)
        split, source = split_datalist(items, val_fraction=val_fraction, seed=seed), "generated fundus images"
    else:
        raise FileNotFoundError(
            "dataset_dir is empty: pass --dataset_dir <ODIR-5K root> (the folder holding the official "
            "'ODIR-5K_Training_Annotations(Updated)_V2.xlsx' or Kaggle's 'full_df.csv'; ODIR-5K comes from the "
            "ODIR-2019 challenge or the Kaggle dataset 'ocular-disease-recognition-odir5k', medvq never downloads "
            "it), or add configs/quickstart.json to train on generated images."
        )
    if not split.train:
        raise ValueError(f"no training images left in {source}: see {output_dir / 'skipped_images.csv'}.")
    write_datalist_json(output_dir / "datalist.json", split.train, split.val, description=source)
    logger.info("data: %s, %d training and %d validation images", source, len(split.train), len(split.val))
    return split
