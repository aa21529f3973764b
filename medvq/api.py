"""Use a trained tokenizer from Python: ``load_tokenizer(path)``, then ``encode`` / ``decode`` / ``reconstruct``.

The network is rebuilt from what its training recorded (``run_info.json``: the preset, codebook, scales, channels,
``spatial_dims`` and the preprocessing), never from guesses, and images are preprocessed with the training's own
pipeline (:func:`medvq.transforms.tokenizer_preprocessing` with ``train=False``: the fundus crop and mask, VAR's
resize and crop, or the CT / MR / X-ray intensity mapping). No Ignite engine is involved.

Example (a finished quickstart run of bundles/odir_vq; see docs/api.md)::

    from medvq.api import load_tokenizer

    tokenizer = load_tokenizer("runs/quickstart")           # a run folder, a bundle folder or a checkpoint file
    tokens = tokenizer.encode(["a.jpg", "b.jpg"])            # (2, 16, 16) int64 token maps
    images = tokenizer.decode(tokens)                        # (2, 3, 64, 64) in [-1, 1]
    same = tokenizer.reconstruct(["a.jpg"], units="input")   # decoded and mapped back to the input's units
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["Tokenizer", "load_tokenizer"]

_RANGE = "image_intensity_range"


def _locate(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """``(checkpoint file, run_info)`` of a run folder, a bundle folder or a checkpoint file."""
    from medvq.report import checkpoint_run_info

    p = Path(path).expanduser()
    if p.is_file():
        candidates = [p]
    elif p.is_dir():
        candidates = [p / "models" / "model.pt", p / "checkpoints" / "model_final.pt",
                      p / "tokenizer" / "checkpoints" / "model_final.pt"]
    else:
        raise FileNotFoundError(f"'{p}' does not exist: give a training run folder, a bundle folder (models/model.pt) "
                                "or a checkpoint file.")
    for checkpoint in candidates:
        if checkpoint.is_file():
            info = checkpoint_run_info(checkpoint)
            if not info:
                raise FileNotFoundError(
                    f"no run_info.json for '{checkpoint}': looked for '{checkpoint.with_suffix('.json')}' and the "
                    "run folder's run_info.json. A tokenizer is rebuilt from what its training recorded; copy the "
                    "run's run_info.json beside the weights as <name>.json."
                )
            return checkpoint, info
    raise FileNotFoundError(f"no tokenizer weights in '{p}': looked for {[str(c) for c in candidates]}.")


def _network(info: Mapping[str, Any], where: Path) -> torch.nn.Module:
    from medvq import networks

    pre = info.get("preprocessing")
    if not isinstance(pre, Mapping):
        raise ValueError(  # noqa: TRY004  an old run_info is a bad value, not a caller's wrong type
            f"the run_info of '{where}' records no 'preprocessing' (trained before medvq recorded it): it cannot be "
            "rebuilt without guessing; retrain, or build the network by hand."
        )
    multiscale = "tokenizer_preset" in info
    preset = info.get("tokenizer_preset", info.get("network_preset"))
    needed = ["num_embeddings", "embedding_dim", "channels", "codebook_update"] + (["scales"] if multiscale else [])
    missing = [k for k in needed if k not in info] + ([] if preset else ["network_preset / tokenizer_preset"])
    if missing:
        raise ValueError(f"the run_info of '{where}' lacks {missing} (runs trained before medvq recorded them): the "
                         "network cannot be rebuilt without guessing.")
    kwargs: dict[str, Any] = {
        "spatial_dims": int(pre.get("spatial_dims", 2)), "in_channels": int(info["channels"]),
        "num_embeddings": int(info["num_embeddings"]), "embedding_dim": int(info["embedding_dim"]),
        "codebook_update": info["codebook_update"], "quantize": True,
    }
    if "commitment_cost" in info:
        kwargs["commitment_cost"] = info["commitment_cost"]
    if multiscale:
        kwargs["scales"] = info["scales"]
        for key, arg in (("phi_shared", "phi_shared"), ("commitment", "commitment"),
                         ("dead_code_threshold", "dead_code_threshold"), ("ema_decay", "decay")):
            if key in info:
                kwargs[arg] = info[key]
        return getattr(networks, preset)(**kwargs)
    return networks.PRESETS[preset](**kwargs)


class Tokenizer:
    """A trained tokenizer with the preprocessing it was trained with (build it with :func:`load_tokenizer`).

    Attributes:
        network: the VQGAN (or multi-scale) tokenizer, in eval mode on ``device``.
        settings: the training's ``run_info.json``.
        checkpoint: the weights file.
        device: where it runs.
        modality, spatial_dims: from the recorded preprocessing.
    """

    def __init__(self, network: torch.nn.Module, settings: Mapping[str, Any], checkpoint: Path,
                 device: torch.device) -> None:
        from medvq.transforms import tokenizer_preprocessing

        self.network, self.settings, self.checkpoint, self.device = network, dict(settings), checkpoint, device
        pre = self.settings["preprocessing"]
        self.modality, self.spatial_dims = pre["modality"], int(pre.get("spatial_dims", 2))
        self.window = pre.get("intensity", {}).get("window")
        self.pipeline = tokenizer_preprocessing(
            "image", modality=self.modality, spatial_dims=self.spatial_dims, image_size=pre.get("image_size", 256),
            roi_size=pre.get("roi_size", 96), pixdim=pre.get("pixdim"), train=False, window=self.window,
            channels=int(self.settings["channels"]), label_key=None,
        )

    def __repr__(self) -> str:
        preset = self.settings.get("tokenizer_preset", self.settings.get("network_preset"))
        return (f"Tokenizer({preset}, {self.settings['num_embeddings']} codes, modality={self.modality!r}, "
                f"spatial_dims={self.spatial_dims}, checkpoint='{self.checkpoint}')")

    # ------------------------------------------------------------------------------------------------- inputs
    def _items(self, inputs: Any) -> list[dict[str, Any]]:
        if isinstance(inputs, (str, os.PathLike)) or not isinstance(inputs, Sequence) or isinstance(inputs, np.ndarray):
            inputs = [inputs]
        items = []
        rest = None
        for x in inputs:
            if isinstance(x, (str, os.PathLike)):
                items.append(self.pipeline({"image": str(x)}))
                continue
            array = (x if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x, dtype=np.float32))).float()
            if array.ndim != self.spatial_dims + 1:
                raise ValueError(f"an array input must be channel-first (C, *spatial) with {self.spatial_dims} spatial "
                                 f"axes, in the input's units (pixels 0..255, HU, ...); got shape {tuple(array.shape)}.")
            if rest is None:
                from monai.transforms import Compose

                rest = Compose(self.pipeline.transforms[1:])  # the training's pipeline after its file loader
            from monai.data import MetaTensor

            items.append(rest({"image": MetaTensor(array)}))
        return items

    def preprocess(self, inputs: Any) -> torch.Tensor:
        """Images as the training preprocessed them: ``(B, C, *spatial)`` float32 in [-1, 1].

        Args:
            inputs: a file path (PNG, JPEG, DICOM file or series folder, NIfTI), a channel-first array or tensor in the
                input's units, or a list of them.
        """
        return torch.stack([torch.as_tensor(item["image"]).float() for item in self._items(inputs)])

    # ------------------------------------------------------------------------------------------------ codes
    @torch.no_grad()
    def encode(self, inputs: Any) -> torch.Tensor:
        """Token maps of the inputs (paths, arrays, or an already preprocessed ``(B, C, *spatial)`` tensor):
        ``(B, *grid)`` int64; multi-scale tokenizers return ``(B, L)`` token sequences (every scale, coarse to fine)."""
        images = inputs if isinstance(inputs, torch.Tensor) and inputs.ndim == self.spatial_dims + 2 \
            else self.preprocess(inputs)
        maps = self.network.encode_to_indices(images.to(self.device).float())
        quantizer = self.network.quantizer
        return quantizer.flatten_indices(maps) if hasattr(quantizer, "flatten_indices") else maps

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, *spatial)`` in [-1, 1] of token maps (or multi-scale token sequences)."""
        return self.network.decode_indices(torch.as_tensor(tokens).to(self.device)).clamp(-1, 1).cpu()

    @torch.no_grad()
    def reconstruct(self, inputs: Any, units: str = "model") -> torch.Tensor:
        """Encode and decode ``inputs`` (paths or arrays); ``units="input"`` maps the result back to the input's
        units (0..255 for photographs, HU for CT, the source scale for MR) with the recorded intensity mapping.
        Shapes are the preprocessed ones (the training's size and crop)."""
        if units not in ("model", "input"):
            raise ValueError(f"units must be 'model' ([-1, 1]) or 'input', got {units!r}.")
        items = self._items(inputs)
        images = torch.stack([torch.as_tensor(item["image"]).float() for item in items])
        out = self.decode(self.encode(images))
        if units == "model":
            return out
        from medvq.transforms import to_input_units

        if self.modality in ("fundus", "natural", "rgb", "xray"):
            return to_input_units(out, "rgb" if self.modality in ("fundus", "natural") else self.modality,
                                  window=self.window)
        ranges = torch.stack([torch.as_tensor(item[_RANGE]).float() for item in items])
        return to_input_units(out, self.modality, window=self.window, intensity_range=ranges)


def load_tokenizer(path: str | os.PathLike, device: str | torch.device | None = None) -> Tokenizer:
    """Load a trained tokenizer with the preprocessing it was trained with.

    Args:
        path: a training run folder (``<run>/checkpoints/model_final.pt`` and ``<run>/run_info.json``; an odir_var /
            image_var run: its ``tokenizer/``), a bundle folder (``models/model.pt`` and ``models/model.json``, what
            ``--publish_model True`` writes), or a checkpoint file with its run's ``run_info.json`` above it or a
            ``<name>.json`` beside it.
        device: where it runs; default CUDA when available, else the CPU.

    Returns:
        A :class:`Tokenizer`.

    Raises:
        FileNotFoundError: no weights at ``path`` or no recorded settings for them (the message says where it looked).
        ValueError: settings too old to rebuild the network without guessing (the message names what is missing).
    """
    from medvq.inference import load_tokenizer_checkpoint

    checkpoint, info = _locate(path)
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    network = _network(info, checkpoint)
    load_tokenizer_checkpoint(network, checkpoint, map_location=device)
    return Tokenizer(network.to(device).eval(), info, checkpoint, device)
