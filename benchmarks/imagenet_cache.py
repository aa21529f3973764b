"""What the persistent cache saves on ImageNet-style JPEGs: an epoch that decodes and resizes vs one that reads the cache.

The bundles build their training dataset with ``medvq.transforms.make_dataset(items, preprocessing, cache_dir)``: a
MONAI ``PersistentDataset`` that stores the deterministic head of the pipeline (for ``natural_preprocessing``: JPEG
decode + Lanczos resize of the shorter side) once, so later epochs only load the stored tensor and crop. This times
one pass over a generated ImageNet-shaped tree (``medvq.data.make_imagenet100_tree``, JPEGs of ``--size`` px on the
shorter side) three ways, in the same process: no cache (every epoch decodes: the baseline), the first cached epoch
(decodes and writes), the second cached epoch (reads). Prints seconds and ratios against the baseline; asserts
nothing.

    OMP_NUM_THREADS=1 python benchmarks/imagenet_cache.py [--size 500] [--image_size 256] [--per_class 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from monai.data import Dataset

from medvq.data import build_imagenet100_datalist, make_imagenet100_tree
from medvq.transforms import make_dataset, natural_preprocessing


def _epoch(dataset) -> float:
    started = time.perf_counter()
    for i in range(len(dataset)):
        dataset[i]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=500, help="shorter side of the JPEGs (ImageNet's median: ~500)")
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--per_class", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = make_imagenet100_tree(Path(tmp) / "tree", train_per_class=args.per_class, size=args.size)
        items = build_imagenet100_datalist(root).train
        transform = natural_preprocessing(image_size=args.image_size, train=True)
        baseline = _epoch(Dataset(items, transform))
        cached = make_dataset(items, transform, cache_dir=Path(tmp) / "cache")
        first, second = _epoch(cached), _epoch(cached)
    n = len(items)
    print(f"{n} JPEGs of {args.size} px (shorter side) -> {args.image_size} px crops, one pass each:")
    print(f"  no cache (decode + resize every epoch): {baseline:.2f} s ({1000 * baseline / n:.1f} ms/image), ratio 1.00")
    print(f"  cache, first epoch (decode + write):     {first:.2f} s, ratio {first / baseline:.2f}")
    print(f"  cache, second epoch (read):              {second:.2f} s, ratio {second / baseline:.2f}")


if __name__ == "__main__":
    main()
