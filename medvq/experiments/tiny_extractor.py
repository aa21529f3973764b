"""A small, seeded, random TorchScript feature extractor for g-FID / r-FID smoke comparisons offline.

Inception-v3 (the FID standard) cannot be downloaded here, so comparisons on this machine use this stand-in: two
random 3x3 convolutions (stride 2, ReLU) and a global average, images in [-1, 1] -> ``(B, 32)`` features. Its
distances are *not* FID and are comparable only with each other: compare numbers from one file (``ExtractorInfo``
records its sha256; the same seed gives the same weights, though TorchScript's zip bytes differ from save to save). Load it with ``medvq.metrics.load_feature_extractor(path, kind="generic")``.

    python -m medvq.experiments.tiny_extractor --output runs/tiny_extractor.pt --seed 0
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

__all__ = ["TinyExtractor", "save_tiny_extractor"]


class TinyExtractor(nn.Module):
    """Random conv features: ``(B, 3, H, W)`` in [-1, 1] -> ``(B, 32)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean(dim=(2, 3))


def save_tiny_extractor(path: str | Path, seed: int = 0) -> Path:
    """Build :class:`TinyExtractor` with weights drawn from ``seed`` and save it as TorchScript at ``path``."""
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = torch.jit.script(TinyExtractor().eval())
    finally:
        torch.random.set_rng_state(generator_state)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(path))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(save_tiny_extractor(args.output, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
