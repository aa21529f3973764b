"""Start-up checks of a bundle's settings: a bad override stops the run at once, with a message a user can act on.

The bundles call these as their first ``initialize`` expressions, with the knobs passed by ``@reference``:

- :func:`check_tokenizer_settings` / :func:`check_generator_settings` run before any data is read or any model is
  built: every knob is checked against its rule (type, range, valid names), then the knobs against each other (the
  image size against the preset's downsampling factor and the multi-scale ``scales``, ``quantize_num_samples``
  against the codebook size, the deferred switch against ``num_epochs``). The presets are built on PyTorch's
  ``meta`` device for this (no memory, a few milliseconds), so the networks' own argument checks run too.
- :func:`check_training_data` runs right after the datalists are known, before any model is built: at least one
  full batch per process (the training loaders drop the last incomplete batch, so fewer images than a batch would
  train nothing and exit 0), a non-empty validation split, a switch reachable within the run's iterations, and
  enough latents in one pass for the codebook.

Every problem found is reported at once in one :class:`SettingsError` (a ``ValueError``), each naming the knob as its
command-line override (``--lr must be a number > 0, got 'abc'``), the value, and the valid values or the fix.
MONAI wraps errors of config expressions in a ``RuntimeError``; the ``SettingsError`` is its ``__cause__``.

When the switch fires (:class:`medvq.handlers.DeferredQuantizationHandler`): ``quantize_start = N`` fires at the end of
epoch (or iteration) N, so quantized training happens only when ``N < num_epochs`` (or the run's iterations); a switch
at the end of the last one would leave the saved tokenizer with a codebook it never trained with, so it is an error.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medvq.utils.distributed import world_size

__all__ = ["SettingsError", "check_generator_settings", "check_tokenizer_settings", "check_training_data"]

logger = logging.getLogger(__name__)

#: the multi-scale tokenizer builders of :mod:`medvq.networks` a bundle may name in ``tokenizer_preset``
MULTISCALE_PRESETS = ("msvqgan_f16", "msvqgan_tiny")
_NUM_CONDITIONS = 8  # ODIR's diagnostic classes (medvq.data.CLASSES); the generator check only needs a valid count


class SettingsError(ValueError):
    """One or more invalid settings; ``problems`` lists one message per problem (also joined in ``str(error)``)."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = f"{len(self.problems)} settings are invalid:\n  - " + "\n  - ".join(self.problems)
        super().__init__(message)


# ----------------------------------------------------------------------------------------------------- knob rules
Rule = Callable[[str, Any], "str | None"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(minimum: int, hint: str = "") -> Rule:
    def rule(name: str, value: Any) -> str | None:
        if _is_int(value) and value >= minimum:
            return None
        return f"--{name} must be an integer >= {minimum}{hint}, got {value!r}"

    return rule


def _number(low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False,
            hint: str = "") -> Rule:
    if low is not None and high is not None:
        text = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        text = f"{'>' if low_open else '>='} {low:g}"
    else:
        text = f"{'<' if high_open else '<='} {high:g}"

    def rule(name: str, value: Any) -> str | None:
        ok = _is_number(value)
        if ok and low is not None:
            ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        return None if ok else f"--{name} must be a number {text}{hint}, got {value!r}"

    return rule


def _optional(rule: Rule, meaning: str) -> Rule:
    def optional(name: str, value: Any) -> str | None:
        problem = None if value is None else rule(name, value)
        return None if problem is None else problem.replace(", got", f" or null ({meaning}; None on the command "
                                                                    "line), got", 1)

    return optional


def _choice(options: Callable[[], Sequence[str]] | Sequence[str], what: str = "a valid value") -> Rule:
    def rule(name: str, value: Any) -> str | None:
        valid = tuple(options() if callable(options) else options)
        if isinstance(value, str) and value in valid:
            return None
        return f"--{name} {value!r} is not {what}; choose one of: {', '.join(valid)}"

    return rule


def _boolean(name: str, value: Any) -> str | None:
    return None if isinstance(value, bool) else (f"--{name} must be true or false (True / False on the command line), "
                                                 f"got {value!r}")


def _string(nonempty: bool = False, what: str = "a path") -> Rule:
    def rule(name: str, value: Any) -> str | None:
        if isinstance(value, str) and (value or not nonempty):
            return None
        return f"--{name} must be a{' non-empty' if nonempty else ''} string ({what}), got {value!r}"

    return rule


def _one_of(values: Sequence[Any], meaning: str) -> Rule:
    def rule(name: str, value: Any) -> str | None:
        if not isinstance(value, bool) and value in values:
            return None
        return f"--{name} must be one of {', '.join(map(str, values))} ({meaning}), got {value!r}"

    return rule


def _roi_size(name: str, value: Any) -> str | None:
    values = [value] if _is_int(value) else value
    if isinstance(values, (list, tuple)) and len(values) in (1, 3) and all(_is_int(v) and v >= 8 for v in values):
        return None
    return f"--{name} must be an integer >= 8 or 3 of them (the 3D crop, voxels), got {value!r}"


def _pixdim(name: str, value: Any) -> str | None:
    values = [value] if _is_number(value) else value
    if value is None or (isinstance(values, (list, tuple)) and len(values) in (1, 3)
                         and all(_is_number(v) and v > 0 for v in values)):
        return None
    return (f"--{name} must be null (keep the source spacing; None on the command line), a spacing > 0 in mm or 3 of "
            f"them, got {value!r}")


def _window(name: str, value: Any) -> str | None:
    if value is None or (isinstance(value, (list, tuple)) and len(value) == 2
                         and all(_is_number(v) for v in value) and value[0] < value[1]):
        return None
    return (f"--{name} must be null (the modality's default; None on the command line) or [low, high] in input units "
            f"with low < high (e.g. \"[-160, 240]\" for a CT soft-tissue window), got {value!r}")


def _modalities() -> Sequence[str]:
    from medvq.transforms.pipelines import TOKENIZER_MODALITIES

    return TOKENIZER_MODALITIES


def _quantize_start(name: str, value: Any) -> str | None:
    if value is None or value == "auto" or (_is_int(value) and value >= 0):
        return None
    return (f"--{name} must be null (None on the command line; standard: quantize from step 0), 0 (kmeans_at_start), "
            f"an integer > 0 (deferred: switch after that many --quantize_start_unit) or 'auto', got {value!r}")


def _scales(name: str, value: Any) -> str | None:
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) > 0:
        return None  # the entries are checked by the tokenizer itself (built on the meta device)
    return f"--{name} must be a non-empty list of token-map sizes coarse to fine (e.g. [1, 2, 4, 8]), got {value!r}"


def _vq_presets() -> Sequence[str]:
    from medvq.networks import PRESETS  # networks import the quantizers, which import medvq.utils: import late

    return tuple(PRESETS)


def _var_presets() -> Sequence[str]:
    from medvq.networks import VAR_PRESETS

    return tuple(VAR_PRESETS)


_RULES: dict[str, Rule] = {
    # data and run
    "dataset_dir": _string(),
    "datalist": _string(what="a datalist JSON file"),
    "data_format": _choice(("odir", "images", "imagenet100")),
    "modality": _choice(_modalities, "a modality"),
    "spatial_dims": _one_of((2, 3), "2D images or slices, 3D volumes"),
    "slice_axis": _one_of((0, 1, 2), "the RAS axis volumes are sliced along: 0 sagittal, 1 coronal, 2 axial"),
    "roi_size": _roi_size,
    "pixdim": _pixdim,
    "window": _window,
    "channels": _optional(_one_of((1, 3), "grayscale or RGB"), "follow the data"),
    "group_by": _choice(("folder", "patient_id", "file")),
    "output_dir": _string(nonempty=True),
    "seed": _integer(0),
    "schedule": _string(nonempty=True, what="the name recorded with the run"),
    "image_size": _integer(8),
    "batch_size": _integer(1),
    "num_workers": _integer(0),
    "num_epochs": _integer(1),
    "val_fraction": _number(0, 1, low_open=True, high_open=True,
                            hint=" (the fraction of patients held out for validation, which the bundle runs every "
                                 "--val_interval epochs)"),
    "val_interval": _integer(1),
    "checkpoint_every": _integer(1, hint=" (iterations)"),
    "resume_from": _string(),
    "synthetic_images": _integer(0),
    "synthetic_size": _integer(16),
    "amp": _boolean,
    # optimisation
    "lr": _number(0, low_open=True),
    "d_lr": _number(0, low_open=True),
    "tokenizer_lr": _optional(_number(0, low_open=True), "use --lr"),
    "warmup_iterations": _integer(1, hint=" (1 = no warm-up; with 0 the LinearLR warm-up would keep the learning rate "
                                          "at 1/100 for the whole run)"),
    "grad_clip_norm": _optional(_number(0, low_open=True), "no clipping"),
    "codebook_lr_scale": _number(0),
    "switch_warmup_iterations": _integer(0),
    "switch_freeze_encoder_iterations": _integer(-1, hint=" (0 = off, -1 = until the run ends)"),
    # tokenizer and codebook
    "network_preset": _choice(_vq_presets, "a preset"),
    "tokenizer_preset": _choice(MULTISCALE_PRESETS, "a multi-scale tokenizer preset"),
    "num_embeddings": _integer(1),
    "embedding_dim": _integer(1),
    "commitment_cost": _number(0),
    "codebook_update": _choice(("gradient", "ema")),
    "ema_decay": _number(0, 1, high_open=True),
    "scales": _scales,
    "phi_shared": _integer(0),
    "commitment": _choice(("all", "final")),
    "dead_code_threshold": _integer(0),
    "codebook_projection": _boolean,
    "revival": _choice(("pooled", "per_scale")),
    "codebook_normalize": _boolean,
    # the deferred switch
    "quantize_start": _quantize_start,
    "quantize_start_unit": _choice(("epochs", "iterations")),
    "quantize_num_samples": _integer(1),
    "quantize_init": _choice(("kmeans", "samples")),
    "auto_switch_every": _integer(1),
    "auto_switch_patience": _integer(1),
    "auto_switch_tolerance": _number(0, 1, high_open=True),
    "auto_switch_min": _integer(1),
    "auto_switch_max": _optional(_integer(1), "no latest switch"),
    # losses
    "adversarial_weight": _number(0),
    "adversarial_criterion": _choice(("hinge", "least_squares")),
    "discriminator_start": _integer(0, hint=" (iterations)"),
    "l1_weight": _number(0),
    "l2_weight": _number(0),
    "perceptual_weight": _number(0),
    "perceptual_weights": _string(),
    # the generator (odir_var stage 2)
    "tokenizer_checkpoint": _string(nonempty=True),
    "generator_preset": _choice(_var_presets, "a VAR preset"),
    "condition_dropout": _number(0, 1),
    "generator_epochs": _integer(1),
    "generator_batch_size": _integer(1),
    "generator_lr": _number(0, low_open=True),
    "generator_weight_decay": _number(0),
    "generator_warmup_iterations": _integer(0),
    "generator_grad_clip_norm": _number(0, low_open=True),
    "label_smoothing": _number(0, 1, high_open=True),
    "precompute_tokens": _boolean,
    "sample_interval": _integer(1, hint=" (epochs)"),
}


def _apply_rules(knobs: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """Problems of the knobs one by one, and the knobs that passed (the cross-checks use only those)."""
    unknown = sorted(set(knobs) - set(_RULES))
    if unknown:
        raise TypeError(f"unknown setting(s) {unknown}; known: {sorted(_RULES)}.")
    problems, good = [], {}
    for name, value in knobs.items():
        problem = _RULES[name](name, value)
        if problem is None:
            good[name] = value
        else:
            problems.append(problem)
    return problems, good


# ------------------------------------------------------------------------------------------ tokenizer geometry
def _build_tokenizer(preset: str, knobs: dict[str, Any], multiscale: bool) -> tuple[Any, str | None]:
    """(the preset built on the meta device, or None; a problem or None) with the valid tokenizer knobs of ``knobs``.

    On the meta device the constructors run their argument checks but allocate nothing (a few milliseconds).
    """
    import torch

    from medvq import networks

    names = {"num_embeddings": "num_embeddings", "embedding_dim": "embedding_dim",
             "commitment_cost": "commitment_cost", "codebook_update": "codebook_update"}
    if multiscale:
        names.update(scales="scales", phi_shared="phi_shared", commitment="commitment",
                     dead_code_threshold="dead_code_threshold", ema_decay="decay",
                     codebook_projection="codebook_projection", revival="revival",
                     codebook_normalize="codebook_normalize")
    arguments = {arg: knobs[knob] for knob, arg in names.items() if knob in knobs}
    if knobs.get("spatial_dims") in (2, 3):
        arguments["spatial_dims"] = knobs["spatial_dims"]
    builder = getattr(networks, preset) if multiscale else networks.PRESETS[preset]
    try:
        with torch.device("meta"):
            return builder(**arguments), None
    except (ValueError, TypeError) as error:
        given = ", ".join(f"--{knob} {knobs[knob]!r}" for knob in names if knob in knobs)
        return None, f"the tokenizer settings do not build {preset} ({given}): {error}"
    except Exception as error:  # noqa: BLE001 - a preset that cannot be built on the meta device: skip the geometry
        logger.debug("could not build %s on the meta device to check the image size: %s", preset, error)
        return None, None


def _geometry_problem(net: Any, preset: str, image_size: int, multiscale: bool) -> str | None:
    """The image size against the tokenizer: a multiple of its downsampling factor, and the last scale's size."""
    factor = int(net.downsample_factor)
    if not multiscale:
        if image_size % factor == 0:
            return None
        lower, upper = image_size // factor * factor, (image_size // factor + 1) * factor
        sizes = f"{lower} or {upper}" if lower >= 8 else f"{upper}"
        return (f"--image_size {image_size} is not a multiple of {preset}'s downsampling factor {factor} (the latent "
                f"grid is image_size / {factor}): use e.g. --image_size {sizes}")
    last = tuple(net.scales[-1])
    if image_size % factor == 0 and last == (image_size // factor,) * len(last):
        return None
    fits = f"--image_size {last[0] * factor}" if len(set(last)) == 1 else f"images of {tuple(s * factor for s in last)}"
    fix = f"use {fits}"
    if image_size % factor == 0:
        fix += f" or end --scales at {image_size // factor}"
    shown = last[0] if len(set(last)) == 1 else list(last)
    return (f"--image_size {image_size} does not fit {preset} with --scales ending at {shown}: the last scale must "
            f"be the latent grid, image_size / {factor} (the downsampling factor); {fix}")


def _tokenizer_problems(good: dict[str, Any]) -> tuple[list[str], Any]:
    """Cross-checks of the tokenizer architecture knobs; also returns the meta-device tokenizer (or None)."""
    multiscale = "tokenizer_preset" in good
    preset = good.get("tokenizer_preset", good.get("network_preset"))
    if preset is None:
        return [], None
    net, problem = _build_tokenizer(preset, good, multiscale)
    problems = [problem] if problem else []
    if net is not None and good.get("spatial_dims") == 3 and "roi_size" in good:
        roi = good["roi_size"]
        factor = int(net.downsample_factor)
        bad = [s for s in ([roi] if _is_int(roi) else roi) if s % factor]
        if bad:
            problems.append(f"--roi_size {roi} is not a multiple of {preset}'s downsampling factor {factor} on every "
                            f"axis (the latent grid is roi_size / {factor}): use multiples of {factor}, e.g. "
                            f"--roi_size {max(factor, bad[0] // factor * factor)}")
        elif multiscale:
            grid = tuple(s // factor for s in ([roi] * 3 if _is_int(roi) else list(roi) * (3 // len(roi))))
            if tuple(net.scales[-1]) != grid:
                problems.append(f"--roi_size {roi} does not fit {preset} with --scales ending at "
                                f"{list(net.scales[-1])}: the last scale must be the latent grid, roi_size / {factor} "
                                f"= {list(grid)}; end --scales at {grid[0] if len(set(grid)) == 1 else list(grid)}")
    elif net is not None and "image_size" in good:
        geometry = _geometry_problem(net, preset, good["image_size"], multiscale)
        if geometry:
            problems.append(geometry)
    return problems, net


# ------------------------------------------------------------------------------------------------ the switch
def _switch_problem(knobs: dict[str, Any], total: int, unit: str, length: str) -> str | None:
    """A deferred switch that cannot fire with quantized training left, in a run of ``total`` ``unit``."""
    start = knobs.get("quantize_start")
    if start is None or start == 0:
        return None
    if start == "auto":
        low, high = knobs.get("auto_switch_min", 1), knobs.get("auto_switch_max")
        if low >= total:
            return (f"--quantize_start 'auto' with --auto_switch_min {low} ({unit}) can never switch before training "
                    f"ends: {length}, and a switch at the end of the last {unit[:-1]} would leave no quantized "
                    f"training; lower --auto_switch_min below {total} or train longer")
        if high is not None and high >= total:
            return (f"--auto_switch_max {high} ({unit}) is not within the run: {length}, so the 'auto' switch would "
                    f"not be guaranteed to fire (a switch at the end of the last {unit[:-1]} leaves no quantized "
                    f"training); set --auto_switch_max below {total} or train longer")
        return None
    if start < total:
        return None
    fix = f"use --quantize_start between 1 and {total - 1}, " if total > 1 else ""
    return (f"--quantize_start {start} ({unit}) is never reached with quantized training left: the switch fires at "
            f"the end of {unit[:-1]} {start}, but {length} (a switch at the end of the last {unit[:-1]} would leave no "
            f"quantized training either); {fix}train longer (--num_epochs), or pick another schedule "
            "(configs/schedules: null = standard, 0 = kmeans_at_start)")


# ------------------------------------------------------------------------------------------------ public checks
def _data_problems(good: dict[str, Any]) -> list[str]:
    """The data knobs against each other: fundus photographs are 2D RGB; ODIR-5K holds fundus photographs."""
    problems = []
    modality, dims = good.get("modality"), good.get("spatial_dims")
    if modality == "fundus" and dims == 3:
        problems.append("--modality fundus is 2D photographs, but --spatial_dims is 3: pick --modality ct, mr, xray "
                        "or rgb for volumes")
    if modality == "fundus" and good.get("channels") == 1:
        problems.append("--modality fundus is RGB, but --channels is 1: leave --channels None or pick another "
                        "--modality")
    if good.get("data_format") == "odir" and modality not in (None, "fundus"):
        problems.append(f"--data_format odir reads ODIR-5K fundus photographs, but --modality is {modality!r}: use "
                        "--modality fundus, or --data_format images for other images")
    if good.get("data_format") == "imagenet100" and modality not in (None, "natural"):
        problems.append(f"--data_format imagenet100 reads ImageNet photographs, but --modality is {modality!r}: use "
                        "--modality natural (VAR's resize and crop)")
    if modality == "natural" and dims == 3:
        problems.append("--modality natural is 2D photographs, but --spatial_dims is 3: pick --modality ct, mr, xray "
                        "or rgb for volumes")
    if good.get("data_format") in ("odir", "imagenet100") and dims == 3:
        problems.append(f"--data_format {good['data_format']} is 2D photographs, but --spatial_dims is 3: use "
                        "--data_format images for volumes")
    return problems


def check_tokenizer_settings(**knobs: Any) -> None:
    """Check a tokenizer bundle's knobs before any data is read (odir_vq, odir_var stage 1, their evaluate/inference).

    Pass any of the bundle's knobs by name (``check_tokenizer_settings(lr=@lr, image_size=@image_size, ...)``); each
    is checked against its rule, then, where all the knobs involved are given and valid:

    - ``network_preset`` (single-scale) or ``tokenizer_preset`` (multi-scale) with the codebook knobs: the preset is
      built on the meta device (its own argument checks run); ``image_size`` must be a multiple of its downsampling
      factor and, multi-scale, ``image_size / factor`` must equal the last of ``scales``;
    - ``quantize_num_samples >= num_embeddings`` unless ``quantize_start`` is null (standard: no k-means);
    - ``quantize_start`` in epochs below ``num_epochs`` (the switch fires at the end of epoch ``quantize_start``),
      ``auto_switch_min`` (and ``auto_switch_max``) below ``num_epochs`` for ``'auto'``, ``auto_switch_max >=
      auto_switch_min``; the iterations unit is checked by :func:`check_training_data`, which knows the epoch length;
    - 3D (``spatial_dims`` 3): ``roi_size`` a multiple of the downsampling factor on every axis;
    - the data knobs: ``modality`` fundus only with ``spatial_dims`` 2 and RGB; ``data_format`` odir only with
      fundus photographs;
    - ``l1_weight + l2_weight + perceptual_weight > 0``, and ``perceptual_weights`` an existing file when
      ``perceptual_weight > 0``.

    Raises:
        SettingsError: every problem found, each naming the knob, its value and the valid values or the fix.
        TypeError: a name that is not a known knob (a mistake in the config, not in the user's overrides).
    """
    problems, good = _apply_rules(knobs)
    more, _ = _tokenizer_problems(good)
    problems += more
    problems += _data_problems(good)

    def valid(*names: str) -> bool:  # given and passed its rule
        return all(name in good for name in names)

    switching = valid("quantize_start") and good["quantize_start"] is not None
    if switching and valid("quantize_num_samples", "num_embeddings") \
            and good["quantize_num_samples"] < good["num_embeddings"]:
        problems.append(
            f"--quantize_num_samples {good['quantize_num_samples']} is below --num_embeddings "
            f"{good['num_embeddings']}: k-means at the switch needs at least one latent per code; raise "
            "--quantize_num_samples (the bundles use 32 or more per code) or lower --num_embeddings")
    if switching and good["quantize_start"] == "auto" and valid("auto_switch_min", "auto_switch_max") \
            and good["auto_switch_max"] is not None and good["auto_switch_max"] < good["auto_switch_min"]:
        problems.append(f"--auto_switch_max {good['auto_switch_max']} is below --auto_switch_min "
                        f"{good['auto_switch_min']}: the 'auto' switch window is empty; raise --auto_switch_max")
    elif switching and valid("num_epochs") and "quantize_start_unit" in good \
            and good["quantize_start_unit"] == "epochs":
        epochs = good["num_epochs"]
        problem = _switch_problem(good, epochs, "epochs", f"--num_epochs is {epochs}")
        if problem:
            problems.append(problem)
    if valid("l1_weight", "l2_weight", "perceptual_weight") \
            and good["l1_weight"] + good["l2_weight"] + good["perceptual_weight"] == 0:
        problems.append("--l1_weight, --l2_weight and --perceptual_weight are all 0: the tokenizer would learn no "
                        "reconstruction; set --l1_weight 1 (VQGAN's)")
    if valid("perceptual_weight", "perceptual_weights") and good["perceptual_weight"] > 0 \
            and not (good["perceptual_weights"] and Path(good["perceptual_weights"]).is_file()):
        problems.append(f"--perceptual_weights {good['perceptual_weights']!r} is not a file, but --perceptual_weight "
                        f"is {good['perceptual_weight']}: give a local torchvision ResNet-50 state-dict file or set "
                        "--perceptual_weight 0 (medvq never downloads weights)")
    if problems:
        raise SettingsError(problems)


def check_generator_settings(**knobs: Any) -> None:
    """Check the knobs of odir_var's stage 2 (the VAR generator; also its sample/evaluate) before any data is read.

    Each knob is checked against its rule; then the stage-1 tokenizer the stage rebuilds (``tokenizer_preset``,
    ``scales``, ``image_size``, codebook knobs, as :func:`check_tokenizer_settings`) and the generator
    (``generator_preset`` with ``num_embeddings``, ``embedding_dim``, the tokenizer's scale lengths and
    ``condition_dropout``) are built on the meta device.

    Raises:
        SettingsError: every problem found, each naming the knob, its value and the valid values or the fix.
        TypeError: a name that is not a known knob.
    """
    problems, good = _apply_rules(knobs)
    more, tokenizer = _tokenizer_problems(good)
    problems += more
    if "generator_preset" in good and (tokenizer is not None or "tokenizer_preset" not in knobs):
        import torch

        from medvq.networks import VAR_PRESETS

        arguments: dict[str, Any] = {k: good[k] for k in ("num_embeddings", "embedding_dim", "condition_dropout")
                                     if k in good}
        if tokenizer is not None:
            arguments["scale_lengths"] = tokenizer.quantizer.scale_lengths
        try:
            with torch.device("meta"):
                VAR_PRESETS[good["generator_preset"]](num_conditions=_NUM_CONDITIONS, **arguments)
        except (ValueError, TypeError) as error:
            problems.append(f"the generator settings do not build {good['generator_preset']}: {error}")
    if problems:
        raise SettingsError(problems)


def _count(items: Any, name: str) -> int:
    try:
        return len(items)
    except TypeError as error:
        raise TypeError(f"datalists.{name} must be a list of items, got {type(items).__name__}.") from error


def check_training_data(
    datalists: Any,
    *,
    batch_size: int,
    batch_size_knob: str = "batch_size",
    validation: bool = True,
    num_epochs: int | None = None,
    num_epochs_knob: str = "num_epochs",
    quantize_start: int | str | None = None,
    quantize_start_unit: str = "epochs",
    auto_switch_min: int = 1,
    auto_switch_max: int | None = None,
    quantize_num_samples: int | None = None,
    num_embeddings: int | None = None,
    network_preset: str | None = None,
    tokenizer_preset: str | None = None,
    image_size: int | None = None,
    scales: Sequence[Any] | None = None,
    spatial_dims: int = 2,
    roi_size: int | Sequence[int] | None = None,
) -> int:
    """Check the datalists against the batch size and the schedule, before any dataset or model is built.

    Args:
        datalists: the bundle's ``datalists`` (``train`` and ``val`` lists of items, :class:`medvq.data.DatalistSplit`).
        batch_size: the training loader's batch size; its loader drops the last incomplete batch.
        batch_size_knob: the knob that sets it, for the message (``"generator_batch_size"`` in odir_var stage 2).
        validation: whether the run validates (then every process needs at least one validation image).
        num_epochs: the run's epochs; with ``quantize_start_unit="iterations"`` the switch must fire before the
            run's last iteration (``num_epochs * iterations per epoch``).
        num_epochs_knob: the knob that sets ``num_epochs``, for the message.
        quantize_start, quantize_start_unit, auto_switch_min, auto_switch_max: the deferred schedule (null = none).
        quantize_num_samples, num_embeddings: with a switch (``quantize_start`` not null), the latents the switch
            collects (``quantize_num_samples``, from one pass over the training images) must be at least
            ``num_embeddings``.
        network_preset, tokenizer_preset, image_size, scales: the tokenizer, for its latents per image.
        spatial_dims, roi_size: 3D volumes: the latents per volume come from ``roi_size``, not ``image_size``.

    Under DDP (``torchrun``; MONAI's ``DistributedSampler`` pads the training split to a multiple of the processes)
    each process trains on ``ceil(n / processes)`` images, so the counts are per process.

    Returns:
        The training iterations per epoch of this process.

    Raises:
        SettingsError: an epoch of 0 iterations, an empty validation split (or fewer validation images than
            processes), a switch beyond the run's iterations, or too few latents for the codebook; the message names
            the counts, the knobs and the fix.
    """
    processes = world_size()
    per_process = f" per process ({processes} processes)" if processes > 1 else ""
    num_train = _count(datalists.train, "train")
    train_each = math.ceil(num_train / processes)
    iterations = train_each // batch_size
    problems = []
    if iterations == 0:
        split = f"the training split has {num_train} image{'s' if num_train != 1 else ''}"
        if processes > 1:
            split += f", {train_each} per process ({processes} processes)"
        problems.append(
            f"{split}, fewer than one batch of --{batch_size_knob} {batch_size}: the training loader drops incomplete "
            "batches, so an epoch would have 0 iterations and nothing would be trained. Use at least "
            f"{(batch_size - 1) * processes + 1} training images (more --synthetic_images, or a --dataset_dir with "
            f"more images) or --{batch_size_knob} {max(train_each, 1)} or less")
    if validation:
        num_val = _count(datalists.val, "val")
        if num_val < processes:
            where = f" for {processes} processes (each needs at least one)" if processes > 1 else ""
            problems.append(
                f"the validation split has {num_val} image{'s' if num_val != 1 else ''}{where}, but the bundle "
                f"validates every --val_interval epochs (with an empty split it would silently report nothing); raise "
                "--val_fraction or use more images (validation holds out whole patients: both eyes of one)")
    if iterations and quantize_start is not None and num_epochs is not None and quantize_start_unit == "iterations":
        total = num_epochs * iterations
        length = (f"the run has {total} iterations ({num_epochs} epochs of {iterations}{per_process}; "
                  f"--{num_epochs_knob} {num_epochs}, {num_train} training images, --{batch_size_knob} {batch_size})")
        problem = _switch_problem({"quantize_start": quantize_start, "auto_switch_min": auto_switch_min,
                                   "auto_switch_max": auto_switch_max}, total, "iterations", length)
        if problem:
            problems.append(problem)
    preset = tokenizer_preset or network_preset
    if iterations and quantize_start is not None and num_embeddings and preset and image_size:
        knobs = {"spatial_dims": spatial_dims, **({"scales": scales} if tokenizer_preset and scales else {})}
        net, _ = _build_tokenizer(preset, knobs, multiscale=tokenizer_preset is not None)
        if net is not None:
            if tokenizer_preset is not None:
                per_image = sum(net.quantizer.scale_lengths)  # the switch collects the residual pyramid
            elif spatial_dims == 3 and roi_size is not None:
                roi = [roi_size] * 3 if isinstance(roi_size, int) else list(roi_size) * (3 if len(roi_size) == 1 else 1)
                per_image = math.prod(s // net.downsample_factor for s in roi)
            else:
                per_image = (image_size // net.downsample_factor) ** 2
            images = iterations * batch_size * processes
            if quantize_num_samples is not None and quantize_num_samples < num_embeddings:
                problems.append(f"--quantize_num_samples {quantize_num_samples} is below --num_embeddings "
                                f"{num_embeddings}: k-means at the switch needs at least one latent per code")
            elif images * per_image < num_embeddings:
                problems.append(
                    f"the deferred-quantization switch would find only {images * per_image} latents in one pass "
                    f"({images} training images x {per_image} latents each) for --num_embeddings {num_embeddings}: "
                    "use more images, larger --image_size, or a smaller --num_embeddings")
    if problems:
        raise SettingsError(problems)
    return iterations
