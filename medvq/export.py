"""Export a trained tokenizer to TorchScript, checked token for token: ``export_tokenizer(run)``.

``medvq export RUN [--output FILE] [--overwrite]`` (:mod:`medvq.cli`) does the same from a shell.

The exported module is the network of :func:`medvq.api.load_tokenizer` with :func:`medvq.networks.tokens_as_forward`
(what the bundles' ``inference.json`` builds as ``network_def``): ``model(images)`` takes the training's preprocessed
images ``(B, C, *spatial)`` float32 in [-1, 1] and returns token maps ``(B, 1, *grid)`` int64 (a multi-scale tokenizer:
``(B, 1, L)``, every scale, coarse to fine). It is made by ``torch.jit.trace`` only, as ``ckpt_export --use_trace
True``: scripting fails inside MONAI's attention block (bundles/odir_vq/docs/README.md).

Limitations, up front:
    - A trace records the operations that ran for one example and bakes any Python branch taken on the data. medvq's
      search takes all rows in one block while tracing (``medvq.quantizers.search``: unbounded memory for a large
      batch, but no loop unrolled for the example's size). The check below is what shows the trace holds: the saved
      file, reloaded, must give the eager network's token indices on every check image, in batches of another size
      than the traced one (batch 1, random pixels the check never uses). A mismatch raises and nothing is written.
    - The input shape is the training's (the preprocessed shape of the check images, stored in the metadata): a
      multi-scale tokenizer's scales are fixed to it, and other sizes are not supported even where convolutions allow.
    - A trace made on a GPU may keep that device in its graph; export on the CPU (the default) for a portable file.

Metadata go into the TorchScript ``_extra_files`` as MONAI does (:func:`monai.data.save_net_with_metadata`:
``metadata.json`` with MONAI / PyTorch / NumPy versions and a timestamp), plus the run's ``run_info.json``, the weights
file's sha256 and the input / output formats; :func:`monai.data.load_net_with_metadata` reads them back.

Example (a finished quickstart run of bundles/odir_vq)::

    from medvq.export import export_tokenizer

    report = export_tokenizer("runs/quickstart")  # writes runs/quickstart/model.ts, checked on the validation images
    model = torch.jit.load(report.output)         # no medvq needed: (B, 3, 64, 64) in [-1, 1] -> (B, 1, 16, 16) int64
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["ExportReport", "export_tokenizer"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_tokenizer` wrote and checked.

    Attributes:
        output: the TorchScript file.
        sha256: hex sha256 of ``output``'s bytes.
        checkpoint: the weights file that was exported.
        weights_sha256: hex sha256 of ``checkpoint`` (also stored in the file's metadata).
        input_shape: one image's shape ``(C, *spatial)``, the only one the model takes.
        token_shape: one image's token indices as the model returns them, ``(1, *grid)`` or ``(1, L)``.
        images_checked: number of check images whose tokens were compared.
        tokens_compared: number of token indices compared: every check image's, plus one batch of 2 (the first and
            the last image) when every check batch had the traced size 1.
        mismatches: token indices where the reloaded file and the eager network differ (always 0: more raises).
        batch_sizes: sizes of the compared batches (the trace was made with batch size 1).
        trace_warnings: ``TracerWarning`` messages of the trace (where a value or branch was baked in), for reading.
        seconds: wall time of the export, check included.
    """

    output: Path
    sha256: str
    checkpoint: Path
    weights_sha256: str
    input_shape: tuple[int, ...]
    token_shape: tuple[int, ...]
    images_checked: int
    tokens_compared: int
    mismatches: int
    batch_sizes: tuple[int, ...]
    trace_warnings: tuple[str, ...]
    seconds: float


def _default_output(checkpoint: Path) -> Path:
    """``<run>/model.ts`` for ``<run>/checkpoints/*.pt``, ``models/model.ts`` for a bundle, else beside the weights."""
    if checkpoint.parent.name == "checkpoints":
        return checkpoint.parent.parent / "model.ts"
    return checkpoint.with_suffix(".ts")


def _validation_images(run: Path, checkpoint: Path) -> tuple[list[str], Path]:
    """The ``validation`` image paths of the training's ``datalist.json`` and the datalist's path."""
    folders = [run] if run.is_dir() else []
    if checkpoint.parent.name == "checkpoints":
        folders.append(checkpoint.parent.parent)
        if checkpoint.parent.parent.name == "tokenizer":  # odir_var / image_var: stage 1 in <run>/tokenizer/
            folders.append(checkpoint.parent.parent.parent)
    datalist = next((f / "datalist.json" for f in folders if (f / "datalist.json").is_file()), None)
    if datalist is None:
        raise FileNotFoundError(
            f"no datalist.json of the training found for '{checkpoint}' (looked in {[str(f) for f in folders]}): "
            "give check_images=[paths], images to compare the exported model's tokens with the eager network's."
        )
    items = json.loads(datalist.read_text()).get("validation") or []
    paths = []
    for item in items:
        path = Path(item["image"] if isinstance(item, dict) else item).expanduser()
        paths.append(str(path if path.is_absolute() else datalist.parent / path))  # MONAI: relative to the datalist
    if not paths:
        raise ValueError(f"'{datalist}' has no 'validation' images to check the export on: give check_images=[paths].")
    return paths, datalist


def _trace(network: torch.nn.Module, example: torch.Tensor, what: str) -> tuple[torch.jit.ScriptModule, list[str]]:
    """``torch.jit.trace`` of ``network`` on ``example``, its ``TracerWarning`` messages kept (others re-issued)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with torch.no_grad():
                traced = torch.jit.trace(network, example, check_trace=False)  # our own check is on real images
        except Exception as error:
            raise RuntimeError(
                f"tracing the {what} failed ({type(error).__name__}: {error}); medvq exports by torch.jit.trace only "
                "(scripting fails inside MONAI's attention block), so this network cannot be exported as it is."
            ) from error
    messages = []
    for warning in caught:
        if not issubclass(warning.category, torch.jit.TracerWarning):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        elif (text := f"{Path(warning.filename).name}:{warning.lineno}: {warning.message}") not in messages:
            messages.append(text)
    return traced, messages


def _save(traced: torch.jit.ScriptModule, path: Path, meta: dict[str, Any]) -> None:
    """MONAI's :func:`monai.data.save_net_with_metadata` into ``path`` (a stream: the name stays exactly ``path``)."""
    from monai.data import save_net_with_metadata

    with open(path, "wb") as stream:
        save_net_with_metadata(traced, stream, meta_values=meta)


def _check(exported: torch.jit.ScriptModule, tokenizer: Any, batches: Iterable[torch.Tensor],
           input_shape: tuple[int, ...]) -> tuple[int, int, list[int], tuple[int, ...]]:
    """Compare ``exported``'s token indices with the eager tokenizer's; ``(tokens, mismatches, batch sizes, shape)``."""
    compared = mismatched = bad_images = images = 0
    sizes: list[int] = []
    token_shape: tuple[int, ...] = ()
    for batch in batches:
        if tuple(batch.shape[1:]) != input_shape:
            raise ValueError(f"check images of shape {tuple(batch.shape[1:])} after preprocessing differ from the "
                             f"traced {input_shape}: the exported model takes one input shape.")
        batch = batch.to(tokenizer.device)
        with torch.no_grad():
            eager = tokenizer.encode(batch).cpu()  # (B, *grid) or (B, L): encode_to_indices, not the traced forward
            out = exported(batch)
        if not isinstance(out, torch.Tensor) or out.dtype != torch.int64 or tuple(out.shape) != (eager.shape[0], 1,
                                                                                                   *eager.shape[1:]):
            got = (out.dtype, tuple(out.shape)) if isinstance(out, torch.Tensor) else type(out).__name__
            raise RuntimeError(f"the exported model returned {got}, expected int64 token indices of shape "
                               f"{(eager.shape[0], 1, *eager.shape[1:])}.")
        differ = out[:, 0].cpu() != eager  # (B, *grid)
        compared += differ.numel()
        mismatched += int(differ.sum())
        bad_images += int(differ.flatten(1).any(1).sum())
        images += batch.shape[0]
        sizes.append(int(batch.shape[0]))
        token_shape = tuple(out.shape[1:])
    if mismatched:
        raise RuntimeError(
            f"the exported model's token indices differ from the eager network's: {mismatched} of {compared} tokens "
            f"in {bad_images} of {images} images (batch sizes {sizes}, traced with 1). The trace baked a data- or "
            "shape-dependent branch; nothing was written."
        )
    return compared, mismatched, sizes, token_shape


def export_tokenizer(
    run: str | os.PathLike,
    output: str | os.PathLike | None = None,
    check_images: Sequence[Any] | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    overwrite: bool = False,
) -> ExportReport:
    """Trace a trained tokenizer to a TorchScript file and check its token indices against the eager network.

    Args:
        run: what :func:`medvq.api.load_tokenizer` takes: a training run folder (an odir_var / image_var run: its
            ``tokenizer/`` is found), a bundle folder (``models/model.pt`` + ``models/model.json``) or a checkpoint.
        output: the ``.ts`` file to write; default ``<run>/model.ts`` for ``<run>/checkpoints/*.pt`` (an odir_var run:
            ``<run>/tokenizer/model.ts``), ``models/model.ts`` for a bundle folder, else the checkpoint's name with
            ``.ts``. Its folder is created.
        check_images: images to compare tokens on: paths (or channel-first arrays in the input's units), preprocessed
            with the training's pipeline; default the ``validation`` images of the training's ``datalist.json`` (a
            bundle folder has none: give them).
        device: where the network is traced and checked; default the CPU (a CUDA trace may keep the device).
        batch_size: images per check batch; default 8. The trace uses batch size 1, so larger check batches also
            show that the trace does not depend on the batch size.
        overwrite: replace an existing ``output``; default False (a finished artifact is never replaced silently).

    Returns:
        An :class:`ExportReport`.

    Raises:
        FileNotFoundError: no weights or settings at ``run`` (from ``load_tokenizer``), or no check images found.
        FileExistsError: ``output`` exists and ``overwrite`` is False (the message names it).
        ValueError / TypeError: a bad argument (named), or check images of another shape than the first.
        RuntimeError: tracing failed, or the reloaded file's tokens differ from the eager ones (the message counts
            them); nothing is written then.
    """
    from medvq.api import load_tokenizer
    from medvq.handlers.evaluation_report import file_sha256
    from medvq.networks import tokens_as_forward

    start = time.perf_counter()
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be a bool, got {type(overwrite).__name__}.")
    if isinstance(check_images, (str, os.PathLike)):
        check_images = [check_images]
    if check_images is not None and len(check_images) == 0:
        raise ValueError("check_images is empty: give at least one image, or None for the validation images.")

    # 1. the eager network (load_tokenizer raises FileNotFoundError naming where it looked), the output (refused
    #    before any work when it exists) and the check images
    source = Path(run).expanduser()
    tokenizer = load_tokenizer(source, device=device)
    checkpoint = tokenizer.checkpoint
    output = Path(output).expanduser() if output is not None else _default_output(checkpoint)
    if output.exists() and not overwrite:
        raise FileExistsError(f"'{output}' exists: an exported model is never replaced silently. Pass overwrite=True "
                              "(CLI: --overwrite) to replace it, or choose another output.")
    images = list(check_images) if check_images is not None else _validation_images(source, checkpoint)[0]

    # 2. forward returning token maps; the check batches through the training's pipeline
    network = tokens_as_forward(tokenizer.network)
    first = tokenizer.preprocess(images[:batch_size])  # (B, C, *spatial)
    input_shape = tuple(int(s) for s in first.shape[1:])  # (C, *spatial)

    def batches() -> Iterator[torch.Tensor]:  # preprocessed one batch at a time: a whole validation set may not fit
        yield first
        for i in range(batch_size, len(images), batch_size):
            yield tokenizer.preprocess(images[i:i + batch_size])
        if batch_size == 1 or len(images) == 1:  # every batch had the traced size (1): check one of 2 as well
            yield torch.cat([first, tokenizer.preprocess(images[-1:])])  # (2, C, *spatial)

    # 3. trace on one random image in [-1, 1] the check never sees
    example = torch.rand((1, *input_shape), generator=torch.Generator().manual_seed(0)) * 2 - 1
    preset = tokenizer.settings.get("tokenizer_preset", tokenizer.settings.get("network_preset"))
    traced, trace_warnings = _trace(network, example.to(tokenizer.device),
                                    f"{tokenizer.spatial_dims}D {preset} tokenizer of '{checkpoint}'")
    if trace_warnings:
        logger.info("%d TracerWarning(s) while tracing (checked below on the check images): %s", len(trace_warnings),
                    trace_warnings)

    # 4. save with MONAI's metadata into a temporary file beside output, reload it and check; then give it its name
    weights_sha256 = file_sha256(checkpoint)
    meta = {
        "name": f"medvq {preset} tokenizer", "exported_by": "medvq.export.export_tokenizer (torch.jit.trace)",
        "checkpoint": checkpoint.name, "checkpoint_sha256": weights_sha256,
        "inputs": {"image": {"shape": [-1, *input_shape], "dtype": "float32", "value_range": [-1, 1],
                             "preprocessing": tokenizer.settings["preprocessing"]}},
        "outputs": {"tokens": {"dtype": "int64", "num_embeddings": int(tokenizer.settings["num_embeddings"])}},
        "run_info": tokenizer.settings,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # same filesystem
    try:
        _save(traced, temporary, meta)
        exported = torch.jit.load(str(temporary), map_location=tokenizer.device).eval()
        compared, mismatches, sizes, token_shape = _check(exported, tokenizer, batches(), input_shape)
        if output.exists() and not overwrite:  # appeared while we traced: still never replaced silently
            raise FileExistsError(f"'{output}' appeared during the export and is kept: pass overwrite=True to "
                                  "replace it, or choose another output.")
        os.replace(temporary, output)
    finally:
        temporary.unlink(missing_ok=True)
    return ExportReport(
        output=output, sha256=file_sha256(output), checkpoint=checkpoint, weights_sha256=weights_sha256,
        input_shape=input_shape, token_shape=token_shape, images_checked=len(images), tokens_compared=compared,
        mismatches=mismatches, batch_sizes=tuple(sizes), trace_warnings=tuple(trace_warnings),
        seconds=time.perf_counter() - start,
    )

