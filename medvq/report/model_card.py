"""A model card next to every trained model: ``<run>/MODEL_CARD.md``, written when training completes.

The card says what the weights are, what they were trained on, how, what was measured, what they are for and what
they are not. Every fact is read back from files the run left, never from the config or a guess:

- ``run_info.json`` (settings, preprocessing, the deferred switch's record),
- ``datalist.json`` and ``skipped_images.csv`` (in the run folder, or one folder up for the two stages of an
  odir_var / image_var run, which share them),
- the TensorBoard event files in ``<run>/tensorboard`` (the last value of every ``val/`` and ``train/`` scalar
  logged per epoch: the final validation coverage and fidelity, a generator's next-token accuracy),
- ``eval/metrics.json`` when the run was evaluated (r-FID, LPIPS, g-FID live there; a card written at the end of
  training has none: ``python -m medvq.report card <run>`` writes it again after an evaluation),
- ``checkpoints/model_final.pt`` (its sha256), and for a generator its tokenizer's run folder.

A number the run did not record is written "not measured", never filled in. :class:`medvq.handlers.CheckpointHandler`
writes the card right after ``model_final.pt`` (and a copy beside a published model, ``models/<name>_card.md``).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "CARD_NAME", "INTENDED_USE", "last_scalars", "model_card", "published_card_path", "training_state", "write_model_card",
]

CARD_NAME = "MODEL_CARD.md"
INTENDED_USE = "Synthetic data and tokens for research; never for diagnosis or treatment decisions."

_COVERAGE = (
    ("usage", "fraction of the K codes used at least once on the validation set"),
    ("perplexity", "exp(entropy of the code frequencies), at most K"),
    ("code_distance", "mean pairwise Euclidean distance between codebook vectors"),
    ("code_distance_used", "the same over the used codes only"),
    ("dead_codes", "codes never used (K - used)"),
    ("shrinkage", "trace(cov(codebook)) / trace(cov(encoder latents))"),
)
_FIDELITY = (
    ("psnr", "peak signal-to-noise ratio of the reconstructions, dB (higher is better)"),
    ("ssim", "structural similarity, images mapped to [0, 1] (higher is better)"),
    ("lpips", "learned perceptual distance (lower is better)"),
    ("r_fid", "reconstruction FID (lower is better)"),
)
_INTEGERS = {"dead_codes", "num_latents", "tokens_dead_codes", "num_images"}
_GENERATED_NOTE = ("generated images (medvq.data.make_fundus_dataset: drawings and augmented views of scikit-image's "
                   "retina sample image); generated images are not medical data")


def published_card_path(published: str | Path) -> Path:
    """Where the card of a model published to ``published`` goes: ``models/model.pt`` -> ``models/model_card.md``
    (a bundle's ``docs/README.md`` is its own card and is never written)."""
    published = Path(published)
    return published.with_name(published.stem + "_card.md")


def _fmt(name: str, value: Any) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return "not measured" if value is None else str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN (not defined for this run)"
    if math.isinf(value):
        return "inf"
    return str(round(value)) if name in _INTEGERS else f"{value:.4g}"


def _json(value: Any) -> str:
    return "`" + json.dumps(value, default=str).replace("|", "\\|") + "`"


def _sha256(path: Path) -> str:
    from medvq.handlers.evaluation_report import file_sha256  # handlers import report: import late

    return file_sha256(path)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def last_scalars(event_dir: Path) -> dict[str, tuple[int, float]]:
    """``tag -> (step, value)`` of the last value of every scalar in a folder's event files, read together as
    TensorBoard does (so a resumed run's purge hides what a killed run logged after its checkpoint).

    One value is kept per tag (TensorBoard's reservoir always keeps the newest), so memory stays flat; reading
    parses every event, about 20 000 a second on one core (a 100-epoch ODIR-5K run logs about 600 000: half a minute)."""
    if not any(event_dir.glob("events.out.tfevents.*")):
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    kinds = ("scalars", "images", "histograms", "tensors", "audio", "compressedHistograms")
    acc = EventAccumulator(str(event_dir), size_guidance=dict.fromkeys(kinds, 1))
    acc.Reload()
    return {tag: (int(acc.Scalars(tag)[-1].step), float(acc.Scalars(tag)[-1].value))
            for tag in acc.Tags()["scalars"] if acc.Scalars(tag)}


def training_state(run_dir: Path) -> dict[str, Any]:
    """Iteration, epoch length and max_epochs from the newest ``checkpoint_<N>.pt`` (a card written after training,
    without the engine at hand)."""
    import torch

    from medvq.handlers.checkpoint import latest_checkpoint

    path = latest_checkpoint(run_dir / "checkpoints")
    if path is None:
        return {}
    try:
        trainer = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("trainer", {})
        iteration, length = int(trainer["iteration"]), int(trainer["epoch_length"])
    except Exception:  # noqa: BLE001  an unreadable checkpoint leaves these facts unrecorded, not the card unwritten
        return {}
    return {"iterations": iteration, "epoch_length": length, "epochs": iteration // max(1, length),
            "max_epochs": trainer.get("max_epochs")}


def _data_folder(run_dir: Path) -> Path:
    return run_dir if (run_dir / "datalist.json").is_file() else run_dir.parent


def _class_counts(items: list[dict[str, Any]], names: list[str] | None) -> str:
    counts: Counter = Counter()
    for item in items:
        label = item.get("label")
        if isinstance(label, list):
            counts.update(i for i, v in enumerate(label) if v)
        elif isinstance(label, (int, float)) and not isinstance(label, bool):
            counts[int(label)] += 1
    if not counts:
        return "no labels recorded"
    name = (lambda i: names[i] if names and i < len(names) else str(i))
    return ", ".join(f"{name(i)} {n}" for i, n in sorted(counts.items()))


def _data_section(run_dir: Path, info: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
    folder = _data_folder(run_dir)
    datalist_path = folder / "datalist.json"
    content = _read_json(datalist_path)
    train, val = content.get("training", []), content.get("validation", [])
    generated = not info.get("dataset_dir") and not info.get("datalist")
    source = content.get("description") or info.get("dataset_dir") or info.get("datalist") or "not recorded"
    facts = {"train": len(train), "val": len(val), "source": source, "generated": generated,
             "data_format": info.get("data_format")}
    lines = ["## Data", ""]
    if not content:
        facts.update(train="an unrecorded number of", val="an unrecorded number of")
        return lines + [f"- datalist: not found (no `{datalist_path}`); counts not recorded", ""], facts
    where = [f"`{k}` = {_json(info[k])}" for k in ("dataset_dir", "datalist", "data_format") if info.get(k)]
    lines.append(f"- source: {source}" + (f" ({', '.join(where)})" if where else "")
                 + ("; **generated data, not medical images**" if generated else ""))
    lines.append(f"- images: {len(train)} training, {len(val)} validation (`{os.path.relpath(datalist_path, run_dir)}`)")
    skipped = folder / "skipped_images.csv"
    if skipped.is_file():
        with open(skipped, newline="") as handle:
            rows = list(csv.DictReader(handle))
        reasons = Counter(row.get("reason", "") or "no reason given" for row in rows)
        detail = f" ({', '.join(f'{n} {r}' for r, n in reasons.most_common())})" if rows else ""
        lines.append(f"- skipped: {len(rows)}{detail}, listed in `{os.path.relpath(skipped, run_dir)}`")
        facts["skipped"] = len(rows)
    else:
        lines.append("- skipped: none (generated images are not screened)" if generated
                     else f"- skipped: not recorded (no `{os.path.relpath(skipped, run_dir)}`)")
    names = info.get("class_names") or info.get("condition_names")
    if not names and isinstance(content.get("labels"), dict):
        names = [content["labels"][k] for k in sorted(content["labels"], key=int)]
    if names:
        lines.append(f"- classes: {', '.join(map(str, names))}; training images per class: "
                     f"{_class_counts(train, names)}")
    pre = info.get("preprocessing")
    if isinstance(pre, Mapping):
        lines.append("- preprocessing: " + ", ".join(f"{k} {_json(v)}" for k, v in pre.items()))
    if info.get("spacing") is not None:
        lines.append(f"- voxel spacing (median, mm): {_json(info['spacing'])}")
    lines += [f"- datalist sha256: `{_sha256(datalist_path)}`", ""]
    return lines, facts


def _schedule_lines(info: Mapping[str, Any], whose: str = "") -> list[str]:
    start, unit = info.get("quantize_start"), info.get("quantize_start_unit", "epochs")
    if "schedule" not in info and "quantize_start" not in info:
        return []
    rule = ("none: quantized from the first step with a random codebook" if start is None
            else "k-means on the untrained encoder's latents at step 0" if start == 0
            else "chosen by the latents' effective dimension" if start == "auto"
            else f"continuous training first, codebook born at {str(unit).removesuffix('s')} {start}")
    schedule = info.get("schedule", "not recorded")
    lines = [f"- {whose}schedule: `{schedule}` (quantize_start {_json(start)} {unit}: {rule})"]
    switch = info.get("switch")
    if isinstance(switch, Mapping):
        lines.append(f"- {whose}switch: at iteration {switch.get('iteration')} (epoch {switch.get('epoch')}), rule "
                     f"`{switch.get('rule', 'fixed')}`; codebook initialised by `{switch.get('init')}` from "
                     f"{switch.get('num_samples')} encoder latents (k-means inertia {_fmt('', switch.get('inertia'))}, "
                     f"{_fmt('', switch.get('kmeans_seconds'))} s; code usage on those latents "
                     f"{_fmt('', switch.get('usage'))})")
        if isinstance(switch.get("auto"), Mapping):
            lines.append(f"- automatic switch: {len(switch['auto'].get('curve', []))} effective-dimension checks, "
                         f"patience {switch['auto'].get('patience')}, tolerance {switch['auto'].get('tolerance')}")
    elif start is not None:
        lines.append(f"- {whose}switch: not recorded (the run ended before its switch)")
    return lines


def _results_table(rows, validation: Mapping[str, Any], evaluation: Mapping[str, Any] | None) -> list[str]:
    head = "| metric | at the end of training (validation) |" + (" evaluation (`eval/metrics.json`) |"
                                                                   if evaluation is not None else "")
    lines = [head, "|---|---|" + ("---|" if evaluation is not None else "")]
    for name, meaning in rows:
        cell = _fmt(name, validation[name]) if name in validation else "not measured"
        row = f"| {name}: {meaning} | {cell} |"
        if evaluation is not None:
            metrics = evaluation.get("metrics", {})
            note = metrics.get(f"{name}_note") or evaluation.get(f"{name}_note")
            value = metrics.get(name)
            row += f" {_fmt(name, value) if value is not None else 'not measured' + (f' ({note})' if note else '')} |"
        lines.append(row)
    return lines


def _at(step: int | None, training: Mapping[str, Any]) -> str:
    length = training.get("epoch_length")
    return f"iteration {step}" + (f", epoch {step // length}" if step is not None and length else "")


def _measured(run_dir: Path, stage: str, weights: Path | None, training: Mapping[str, Any]) -> list[str]:
    scalars = last_scalars(run_dir / "tensorboard")
    evaluation = _read_json(run_dir / "eval" / "metrics.json") or None
    lines = ["## Measured results", ""]
    group = "train" if stage == "generator" else "val"
    recorded = {tag.split("/", 1)[1]: v for tag, v in scalars.items() if tag.startswith(group + "/")}
    values = {name: value for name, (_, value) in recorded.items()}
    if stage == "generator":
        accuracy = {k: v for k, v in values.items() if k.startswith("token_acc")}
        if accuracy:
            step = recorded["token_acc"][0] if "token_acc" in recorded else None
            lines.append(f"Next-token accuracy on the training tokens (teacher-forced, the last epoch's, logged at "
                         f"{_at(step, training)}); the generator has no validation split:")
            lines += ["", "| metric | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(k, v)} |" for k, v in sorted(accuracy.items())]
        else:
            lines.append("Next-token accuracy: not measured (no `train/token_acc` in `tensorboard/`).")
    elif values:
        steps = sorted({step for step, _ in recorded.values()})
        lines.append(f"The last validation of the training (TensorBoard `val/*`, logged at "
                     f"{_at(steps[-1], training)}), over the whole validation split:")
    else:
        lines.append("No validation was recorded (no `val/*` scalars in `tensorboard/`).")
    if stage != "generator":
        lines += ["", "Codebook coverage:", ""] + _results_table(_COVERAGE, values, evaluation)
        lines += ["", "Fidelity:", ""] + _results_table(_FIDELITY, values, evaluation)
        known = {n for n, _ in _COVERAGE + _FIDELITY}
        other = {k: v for k, v in values.items() if k not in known and not k.startswith("reconstructions")}
        if other:
            lines += ["", "Other validation scalars recorded: "
                      + ", ".join(f"{k} {_fmt(k, v)}" for k, v in sorted(other.items()))]
    elif evaluation is not None:
        metrics = {k: v for k, v in evaluation.get("metrics", {}).items() if not isinstance(v, (dict, list))}
        lines += ["", "Evaluation (`eval/metrics.json`): " + ", ".join(
            f"{k} {_fmt(k, v) if not isinstance(v, str) else v}" for k, v in sorted(metrics.items()))]
    if evaluation is None:
        lines += ["", ("Not evaluated yet (no `eval/metrics.json`): run the bundle's `evaluate.json` (r-FID / "
                       "g-FID with a local feature extractor, LPIPS), then `python -m medvq.report card <run>` "
                       "rewrites this card.")]
    else:
        evaluated = evaluation.get("checkpoint_sha256") or (evaluation.get("checkpoints", {}).get(stage) or {}).get(
            "sha256")
        if evaluated and weights is not None and weights.is_file():
            same = evaluated == _sha256(weights)
            lines += ["", f"The evaluation's weights ({evaluated[:12]}...) "
                      + ("are these weights." if same else "are **not** these weights (an older model).")]
    return lines + [""]


def _tokenizer_summary(tokenizer_dir: Path) -> list[str]:
    info = _run_info(tokenizer_dir)
    if not info:
        return [f"- tokenizer: no `run_info.json` in `{tokenizer_dir}`"]
    scalars = {tag[4:]: v for tag, (_, v) in last_scalars(tokenizer_dir / "tensorboard").items()
               if tag.startswith("val/")}
    switch = info.get("switch") if isinstance(info.get("switch"), Mapping) else {}
    card = tokenizer_dir / CARD_NAME
    return [
        f"- tokenizer: `{info.get('tokenizer_preset', info.get('network_preset'))}`, {info.get('num_embeddings')} "
        f"codes of dimension {info.get('embedding_dim')}, scales {_json(info.get('scales'))}, schedule "
        f"`{info.get('schedule')}`, switch at iteration {switch.get('iteration', 'not recorded')} "
        f"(`{tokenizer_dir}`" + (f", its card `{card}`)" if card.is_file() else ")"),
        "- tokenizer at the end of its training (validation): " + ", ".join(
            f"{k} {_fmt(k, scalars[k]) if k in scalars else 'not measured'}"
            for k in ("usage", "perplexity", "dead_codes", "psnr", "ssim")),
    ]


def _run_info(run_dir: Path) -> dict[str, Any]:
    """The run's ``run_info.json``, or ``{}`` when it is missing or unreadable."""
    from medvq.report.run_info import read_run_info

    try:
        return read_run_info(run_dir)
    except (OSError, ValueError):
        return {}


def _tokenizer_dir(run_dir: Path, info: Mapping[str, Any]) -> Path:
    """A generator's tokenizer run folder: the run's ``tokenizer/`` beside ``generator/`` (what
    :func:`medvq.api.load_generator` uses), else the folder above the recorded ``tokenizer_checkpoint``'s."""
    beside = run_dir.parent / "tokenizer"
    return beside if beside.is_dir() else Path(str(info.get("tokenizer_checkpoint", ""))).parent.parent


def _model_section(run_dir: Path, info: Mapping[str, Any], stage: str, preset: Any,
                   published: Path | None) -> list[str]:
    lines = ["## Model", ""]
    if stage == "generator":
        lines.append(f"- preset: `{preset}`, next-scale prediction over scales {_json(info.get('scales'))} of a "
                     f"{info.get('num_embeddings')}-code tokenizer")
        lines.append(f"- conditions: {_json(info.get('condition_names'))} (condition dropout "
                     f"{info.get('condition_dropout')}, for classifier-free guidance)")
        lines += _tokenizer_summary(_tokenizer_dir(run_dir, info))
        recorded = info.get("tokenizer_sha256")
        if recorded:
            weights = _tokenizer_dir(run_dir, info) / "checkpoints" / "model_final.pt"
            now = _sha256(weights) if weights.is_file() else None
            state = ("" if now is None else " (the file there now matches)" if now == recorded
                     else " (**the file there now differs**)")
            lines.append(f"- tokenizer weights sha256 (recorded when the generator's training started): "
                         f"`{recorded}`{state}")
    else:
        lines.append(f"- preset: `{preset}`, {info.get('num_embeddings')} codes of dimension "
                     f"{info.get('embedding_dim')} (commitment cost {info.get('commitment_cost')}, codebook update "
                     f"`{info.get('codebook_update')}`)")
        if info.get("scales"):
            lines.append(f"- scales: {_json(info['scales'])} (one token map per scale, coarse to fine)")
        lines.append(f"- images: {info.get('image_size')} px, {info.get('channels')} channel(s)")
    weights = run_dir / "checkpoints" / "model_final.pt"
    what = "the VAR generator's" if stage == "generator" else "the tokenizer's"
    if weights.is_file():
        lines.append(f"- weights: `checkpoints/model_final.pt`, {what} state dict alone "
                     f"(`torch.load(path, weights_only=True)`), {weights.stat().st_size} bytes, sha256 "
                     f"`{_sha256(weights)}`")
    else:
        lines.append("- weights: not written yet (no `checkpoints/model_final.pt`)")
    if published is not None:
        lines.append(f"- published copy: `{published}` (settings beside it: `{published.with_suffix('.json')}`)")
    return [*lines, ""]


def _training_section(info: Mapping[str, Any], data_info: Mapping[str, Any], stage: str,
                      training: Mapping[str, Any]) -> list[str]:
    lines = ["## Training", ""]
    lines += _schedule_lines(data_info, "the tokenizer's ") if stage == "generator" else _schedule_lines(info)
    if training.get("iterations") is not None:
        lines.append(f"- trained: {training.get('epochs')} epoch(s) (max_epochs {training.get('max_epochs')}), "
                     f"{training['iterations']} iterations ({training.get('epoch_length')} per epoch)")
    else:
        lines.append("- epochs / iterations: not recorded (no checkpoint to read them from)")
    lines += [f"- {key}: {_json(info[key])}" for key in ("seed", "lr", "precompute_tokens") if key in info]
    return [*lines, ""]


def _limits_section(info: Mapping[str, Any], data: Mapping[str, Any], preset: Any, stage: str) -> list[str]:
    lines = ["## Intended use", "", INTENDED_USE, "",
             ("Tokens and generated images are research material (codebook studies, synthetic-data experiments); "
              "they are not a medical device and not for any decision about a patient."), "", "## Limits", ""]
    seed = info.get("seed", "not recorded")
    if stage == "generator":
        lines.append(f"- trained on the tokens of {data['train']} images ({data['source']}), one run (seed {seed}); "
                     "its accuracy above is on those training tokens, not on held-out images")
    else:
        lines.append(f"- trained on {data['train']} images ({data['source']}); the results above come from one run "
                     f"(seed {seed}) and a validation split of {data['val']} images")
    if data.get("generated"):
        lines.append(f"- **quickstart / generated-data run**: trained on {_GENERATED_NOTE}; this model says nothing "
                     "about real patients' images")
    if str(preset).endswith("_tiny"):
        lines.append(f"- `{preset}` is a test / quickstart size, not the paper's")
    if data.get("data_format") == "odir" and not data.get("generated"):
        lines.append("- ODIR-5K: research use under the terms of the ODIR-2019 challenge / Kaggle page; weights "
                     "trained on it are derived from it (see `bundles/odir_var/docs/data_license.txt`)")
    elif data.get("data_format") == "imagenet100":
        lines.append("- ImageNet: use under ImageNet's terms of access (non-commercial research and education)")
    lines.append("- no clinical validation: the metrics measure reconstruction and codebook coverage (or next-token "
                 "accuracy), not diagnostic value")
    return [*lines, ""]


def _load_section(run_dir: Path, stage: str, published: Path | None) -> list[str]:
    import medvq.api

    lines = ["## How to load", ""]
    if stage == "generator" and not hasattr(medvq.api, "load_generator"):
        return [*lines, "Sample with the bundle's `configs/sample.json` (see its `docs/README.md`).", ""]
    name, var = ("load_generator", "generator") if stage == "generator" else ("load_tokenizer", "tokenizer")
    lines += ["```python", f"from medvq.api import {name}", "", f"{var} = {name}({str(run_dir)!r})"]
    if published is not None:
        lines.append(f"# or the published copy: {name}({str(published)!r})")
    return [*lines, "```", ""]


def model_card(run_dir: str | Path, training: Mapping[str, Any] | None = None,
               published: str | Path | None = None) -> str:
    """The markdown model card of a trained run folder (one stage's folder: ``output_dir`` of odir_vq, ``tokenizer/``
    or ``generator/`` of odir_var).

    Args:
        run_dir: the folder holding ``run_info.json``, ``checkpoints/model_final.pt`` and ``tensorboard/``.
        training: ``{"iterations", "epochs", "epoch_length", "max_epochs"}`` of the trainer that just finished (what
            :class:`~medvq.handlers.CheckpointHandler` passes); None reads them from the newest checkpoint.
        published: where the weights were also published (``models/model.pt``), or None.

    Raises:
        FileNotFoundError: ``run_dir`` has no ``run_info.json`` (not a bundle's run folder).
    """
    # 0. what the run recorded
    run_dir = Path(run_dir)
    published = Path(published) if published is not None else None
    info = _run_info(run_dir)
    if not info:
        raise FileNotFoundError(f"no run_info.json in '{run_dir}': a model card is written for a bundle's run folder.")
    stage = "generator" if info.get("stage") == "generator" else "tokenizer"
    # a generator's data and schedule are its tokenizer's (stage 2 shares stage 1's datalist.json)
    data_info = {**_run_info(_tokenizer_dir(run_dir, info)), **info} if stage == "generator" else info
    training = dict(training) if training else training_state(run_dir)
    if stage == "generator":
        preset, title = info.get("generator_preset"), "VAR generator"
    else:
        preset = info.get("tokenizer_preset", info.get("network_preset"))
        title = "multi-scale VQ tokenizer" if "tokenizer_preset" in info else "VQGAN tokenizer"
    # 1. header, 2. model, 3. data, 4. training, 5. measured results, 6. intended use and limits, 7. how to load
    lines = [f"# Model card: {title} `{preset}` ({run_dir.name})", "", f"**Intended use:** {INTENDED_USE}", "",
             f"Written by medvq from the files the run left in `{run_dir}`; every number is one the run recorded.", ""]
    lines += _model_section(run_dir, info, stage, preset, published)
    data_lines, data = _data_section(run_dir, data_info)
    lines += data_lines
    lines += _training_section(info, data_info, stage, training)
    lines += _measured(run_dir, stage, run_dir / "checkpoints" / "model_final.pt", training)
    lines += _limits_section(info, data, preset, stage)
    lines += _load_section(run_dir, stage, published)
    return "\n".join(lines)


def write_model_card(run_dir: str | Path, training: Mapping[str, Any] | None = None,
                     published: str | Path | None = None, path: str | Path | None = None) -> Path:
    """Write :func:`model_card` to ``path`` (default ``<run_dir>/MODEL_CARD.md``) atomically (a temporary file,
    then ``os.replace``) and return it; arguments as :func:`model_card`."""
    target = Path(path) if path is not None else Path(run_dir) / CARD_NAME
    text = model_card(run_dir, training=training, published=published)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
