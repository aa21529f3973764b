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

A trained generator (an odir_var / image_var run) samples with its tokenizer, each image with its provenance::

    from medvq.api import load_generator

    generator = load_generator("runs/quickstart_var")
    samples = generator.generate(["G", "D+H"], num_samples=4, seed=0)   # 8 synthetic images, never for diagnosis
    samples.images, samples.tokens, samples.provenance[0]["checkpoints"]
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["Generator", "Samples", "Tokenizer", "load_generator", "load_tokenizer"]

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
                         ("dead_code_threshold", "dead_code_threshold"), ("ema_decay", "decay"),
                         ("codebook_projection", "codebook_projection"), ("revival", "revival"),
                         ("codebook_normalize", "codebook_normalize")):
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
        inputs = self._as_list(inputs)
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
    @staticmethod
    def _as_list(inputs: Any) -> list[Any]:
        if isinstance(inputs, (str, os.PathLike)) or not isinstance(inputs, Sequence) or isinstance(inputs, np.ndarray):
            return [inputs]
        return list(inputs)

    @staticmethod
    def _check_batch_size(batch_size: int) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")

    @torch.no_grad()
    def encode(self, inputs: Any, batch_size: int = 32) -> torch.Tensor:
        """Token maps of the inputs (paths, arrays, or an already preprocessed ``(B, C, *spatial)`` tensor):
        ``(B, *grid)`` int64; multi-scale tokenizers return ``(B, L)`` token sequences (every scale, coarse to fine).
        Inputs are read, preprocessed and encoded ``batch_size`` at a time (memory stays bounded)."""
        self._check_batch_size(batch_size)
        if isinstance(inputs, torch.Tensor) and inputs.ndim == self.spatial_dims + 2:
            batches = (inputs[i:i + batch_size] for i in range(0, len(inputs), batch_size))
        else:
            listed = self._as_list(inputs)
            batches = (self.preprocess(listed[i:i + batch_size]) for i in range(0, len(listed), batch_size))
        quantizer = self.network.quantizer
        out = []
        for images in batches:
            maps = self.network.encode_to_indices(images.to(self.device).float())
            out.append(quantizer.flatten_indices(maps) if hasattr(quantizer, "flatten_indices") else maps)
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """Images ``(B, C, *spatial)`` in [-1, 1] (on the CPU) of token maps (or multi-scale token sequences),
        ``batch_size`` at a time."""
        self._check_batch_size(batch_size)
        tokens = torch.as_tensor(tokens)
        return torch.cat([self.network.decode_indices(tokens[i:i + batch_size].to(self.device)).clamp(-1, 1).cpu()
                          for i in range(0, len(tokens), batch_size)])

    def to_input_units(self, images: torch.Tensor, intensity_range: torch.Tensor | None = None) -> torch.Tensor:
        """``images`` in [-1, 1] mapped to the training data's units with the recorded intensity mapping: 0..255 for
        photographs, the window's units for CT / X-ray / RGB; MR needs each image's ``intensity_range`` (``(B, 2)``,
        its percentile values: MR has no absolute unit)."""
        from medvq.transforms import to_input_units

        modality = "rgb" if self.modality in ("fundus", "natural") else self.modality
        return to_input_units(images, modality, window=self.window, intensity_range=intensity_range)

    @torch.no_grad()
    def reconstruct(self, inputs: Any, units: str = "model", batch_size: int = 32) -> torch.Tensor:
        """Encode and decode ``inputs`` (paths or arrays), ``batch_size`` at a time; ``units="input"`` maps the
        result back to the input's units (0..255 for photographs, HU for CT, the source scale for MR) with the
        recorded intensity mapping. Shapes are the preprocessed ones (the training's size and crop)."""
        if units not in ("model", "input"):
            raise ValueError(f"units must be 'model' ([-1, 1]) or 'input', got {units!r}.")
        self._check_batch_size(batch_size)
        listed, out = self._as_list(inputs), []
        for i in range(0, len(listed), batch_size):
            items = self._items(listed[i:i + batch_size])
            images = torch.stack([torch.as_tensor(item["image"]).float() for item in items])
            recon = self.decode(self.encode(images, batch_size), batch_size)
            if units == "input":
                ranges = None if self.modality in ("fundus", "natural", "rgb", "xray") else torch.stack(
                    [torch.as_tensor(item[_RANGE]).float() for item in items])
                recon = self.to_input_units(recon, ranges)
            out.append(recon)
        return torch.cat(out)


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


# ------------------------------------------------------------------------------------------------------ generator


@dataclass
class Samples:
    """What :meth:`Generator.generate` returns.

    Attributes:
        images: ``(N, C, *spatial)`` float32 on the CPU, in [-1, 1] (``units="model"``) or the training data's units.
        tokens: ``(N, L)`` int64 token sequences (every scale, coarse to fine) the images were decoded from.
        conditions: the condition name of each image (``"G"``, ``"D+H"``, ``"null"``).
        provenance: one record per image, what ``sample.json``'s sidecars hold (less the file name): the synthetic
            marker and notice, the condition (name, labels, vector), seed, batch seed and position, the sampling
            settings, path and sha256 of both checkpoints and of the training datalist, software versions, time.
    """

    images: torch.Tensor
    tokens: torch.Tensor
    conditions: list[str] = field(default_factory=list)
    provenance: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])


class Generator:
    """A trained VAR generator with the tokenizer it was trained on (build it with :func:`load_generator`).

    Attributes:
        network: the :class:`~medvq.networks.VARTransformer`, in eval mode on ``device``.
        tokenizer: the :class:`Tokenizer` whose codebook the generator predicts (decodes its tokens).
        settings: the generator training's ``run_info.json``.
        condition_names: the classes a condition is made of (ODIR: N, D, G, C, A, H, M, O).
        checkpoint: the generator's weights file.
        training_data: the datalist the models were trained on (``datalist.json`` of the run), or None if absent.
    """

    def __init__(self, network: torch.nn.Module, tokenizer: Tokenizer, settings: Mapping[str, Any], checkpoint: Path,
                 training_data: Path | None) -> None:
        self.network, self.tokenizer, self.settings = network, tokenizer, dict(settings)
        self.checkpoint, self.training_data = checkpoint, training_data
        self.condition_names = list(self.settings.get("condition_names") or [])

    def __repr__(self) -> str:
        return (f"Generator({self.settings.get('generator_preset')}, conditions {self.condition_names}, "
                f"checkpoint='{self.checkpoint}', tokenizer={self.tokenizer!r})")

    @torch.no_grad()
    def generate(
        self,
        conditions: str | Sequence[str] = "null",
        num_samples: int = 1,
        seed: int = 0,
        guidance: float = 2.5,
        top_k: int = 900,
        top_p: float = 0.96,
        temperature: float = 1.0,
        guidance_ramp: str = "linear",
        batch_size: int = 16,
        units: str = "model",
        progress: bool = False,
    ) -> Samples:
        """Sample ``num_samples`` images for each condition.

        The draws are those of the bundle's ``sample.json`` with the same seed and batch size (both use
        :func:`medvq.generation.sample_batches`: batch ``b`` of condition ``c`` is seeded with
        ``batch_seed(seed, c, b)``), so a figure made in Python can be regenerated from its records.

        Args:
            conditions: a condition or a list: a class (``"G"``), classes joined by ``+`` (``"D+H"``, multi-label) or
                ``"null"`` (unconditional).
            num_samples: images per condition.
            seed: base seed.
            guidance, top_k, top_p, temperature, guidance_ramp: as :func:`medvq.networks.sample_var` (defaults:
                VAR's FID settings; VAR's cfg 1.5 is guidance 2.5 here).
            batch_size: images drawn together.
            units: ``"model"`` ([-1, 1]) or ``"input"``: 0..255 for photographs, HU for CT (the training's window);
                MR has no absolute unit and stays in [-1, 1] (an error asks for ``"model"``).
            progress: show a progress bar.

        Raises:
            ValueError: an unknown class in ``conditions`` (the message lists the generator's), ``num_samples`` or
                ``batch_size`` < 1, or ``units`` not ``"model"`` / ``"input"`` (or ``"input"`` for MR).
        """
        from tqdm.auto import tqdm

        from medvq.generation import condition_vectors
        from medvq.generation.writer import provenance_info, sample_batches, sample_record, sampling_settings

        if num_samples < 1 or batch_size < 1:
            raise ValueError(f"num_samples and batch_size must be >= 1, got {num_samples} and {batch_size}.")
        if units not in ("model", "input"):
            raise ValueError(f"units must be 'model' ([-1, 1]) or 'input', got {units!r}.")
        tok = self.tokenizer
        if units == "input" and tok.modality == "mr":
            raise ValueError("units='input' needs an absolute intensity unit; MR images were scaled per volume "
                             "(percentiles) and have none: use units='model'.")
        vectors = condition_vectors([conditions] if isinstance(conditions, str) else list(conditions),
                                    self.condition_names)
        settings = sampling_settings(guidance, guidance_ramp, top_k, top_p, temperature)
        provenance = provenance_info({"tokenizer": str(tok.checkpoint), "generator": str(self.checkpoint)},
                                     {"datalist": str(self.training_data)} if self.training_data else None)
        images, tokens, names, records = [], [], [], []
        bar = tqdm(total=len(vectors) * num_samples, desc="sampling", disable=not progress, leave=False)
        for name, vector in vectors.items():
            for _start, n, bseed, batch, batch_tokens in sample_batches(
                    self.network, tok.network, name, vector, num_samples, batch_size, seed, settings):
                images.append(batch.float().cpu())
                tokens.append(batch_tokens)
                names.extend([name] * n)
                records.extend({"synthetic": True, "notice": _notice(),
                                **sample_record(name, vector, self.condition_names, seed, bseed, n, j, settings,
                                                provenance, batch_tokens[j])} for j in range(n))
                bar.update(n)
        bar.close()
        out = torch.cat(images)
        if units == "input":
            out = tok.to_input_units(out)
            for record in records:
                record["units"] = "input"
        return Samples(out, torch.cat(tokens), names, records)


def _notice() -> str:
    from medvq.generation import SYNTHETIC_NOTICE

    return SYNTHETIC_NOTICE


def _locate_generator(path: str | os.PathLike) -> tuple[Path, dict[str, Any], Path]:
    """``(generator checkpoint, its run_info, tokenizer checkpoint or folder)`` of a run, generator or bundle folder."""
    from medvq.report import checkpoint_run_info

    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"'{p}' does not exist: give a generator training run folder (odir_var / image_var: "
                                "its output_dir or its generator/), a bundle folder (models/generator.pt) or a "
                                "generator checkpoint file.")
    if p.is_file():
        candidates = [p]
    else:
        candidates = [p / "generator" / "checkpoints" / "model_final.pt", p / "checkpoints" / "model_final.pt",
                      p / "models" / "generator.pt"]
    for checkpoint in candidates:
        if not checkpoint.is_file():
            continue
        info = checkpoint_run_info(checkpoint)
        if info.get("stage") != "generator":
            if p.is_file() or checkpoint.parent.name == "models":
                raise ValueError(f"'{checkpoint}' is not a generator: its recorded settings "
                                 f"({'none found' if not info else 'stage ' + repr(info.get('stage'))}) are not a "
                                 "VAR training's (stage 'generator'). A tokenizer loads with load_tokenizer.")
            continue
        if checkpoint.parent.name == "models":  # a bundle: the tokenizer is published beside it
            tokenizer = checkpoint.parent / "model.pt"
        else:  # <run>/generator/checkpoints/model_final.pt: the tokenizer is the run's tokenizer/
            run = checkpoint.parent.parent.parent
            recorded = Path(str(info.get("tokenizer_checkpoint", "")))
            tokenizer = run / "tokenizer" if (run / "tokenizer").is_dir() else recorded
        return checkpoint, info, tokenizer
    raise FileNotFoundError(f"no generator weights in '{p}': looked for {[str(c) for c in candidates]} (with "
                            "stage 'generator' in their run_info.json). A tokenizer run loads with load_tokenizer.")


def load_generator(path: str | os.PathLike, device: str | torch.device | None = None) -> Generator:
    """Load a trained VAR generator and the tokenizer it was trained on.

    Args:
        path: an odir_var / image_var run folder (its ``output_dir``: ``generator/`` and ``tokenizer/`` inside), its
            ``generator/`` folder, a bundle folder (``models/generator.pt`` + ``models/generator.json`` beside the
            tokenizer's ``models/model.pt`` + ``models/model.json``, what ``--publish_model True`` writes), or a
            generator checkpoint with its run's ``run_info.json``.
        device: where it runs; default CUDA when available, else the CPU.

    Returns:
        A :class:`Generator` (its ``tokenizer`` is a :class:`Tokenizer`).

    Raises:
        FileNotFoundError: no generator weights, no recorded settings, or no tokenizer where the run keeps it.
        ValueError: a tokenizer file that is not the one the generator was trained on (its sha256 differs from the
            recorded one), settings too old to rebuild the network, or a checkpoint that is not a generator's.
    """
    from medvq import networks
    from medvq.handlers.evaluation_report import file_sha256
    from medvq.inference import load_tokenizer_checkpoint

    checkpoint, info, tokenizer_path = _locate_generator(path)
    tokenizer = load_tokenizer(tokenizer_path, device=device)
    recorded = info.get("tokenizer_sha256")
    if recorded and file_sha256(tokenizer.checkpoint) != recorded:
        raise ValueError(f"the tokenizer '{tokenizer.checkpoint}' is not the one the generator '{checkpoint}' was "
                         f"trained on (sha256 differs from the recorded {recorded[:12]}...): its tokens would mean "
                         "other images. Put the run's own tokenizer back.")
    missing = [k for k in ("generator_preset", "condition_names") if k not in info]
    if missing:
        raise ValueError(f"the run_info of '{checkpoint}' lacks {missing}: the generator cannot be rebuilt without "
                         "guessing.")
    quantizer = tokenizer.network.quantizer
    var = getattr(networks, info["generator_preset"])(
        num_embeddings=int(tokenizer.settings["num_embeddings"]), embedding_dim=int(tokenizer.settings["embedding_dim"]),
        scale_lengths=quantizer.scale_lengths, num_conditions=len(info["condition_names"]),
        condition_dropout=float(info.get("condition_dropout", 0.1)),
    )
    load_tokenizer_checkpoint(var, checkpoint, map_location=tokenizer.device, what="generator")
    datalist = checkpoint.parent.parent.parent / "datalist.json" if checkpoint.parent.name == "checkpoints" else None
    if checkpoint.parent.name == "models":
        datalist = checkpoint.parent / "datalist.json"
    return Generator(var.to(tokenizer.device).eval(), tokenizer, info, checkpoint,
                     datalist if datalist is not None and datalist.is_file() else None)
