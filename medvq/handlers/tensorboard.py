"""A training run's TensorBoard layout: ``train/`` and ``val/`` tag groups, its settings as text, HParams.

Tag scheme (every step is a trainer iteration, see ``tensorboard_step`` in the bundles' train configs):

- ``train/<key>``: the trainer's per-iteration outputs (``train/loss``, ``train/lr``, ...) and per-epoch metrics
  (``train/token_acc``);
- ``val/<name>``: the evaluator's metrics with their ``val_`` prefix dropped (``val_psnr`` -> ``val/psnr``; inside the
  engines the metrics keep their names, which ``key_metric`` and the checkpoint code use), the reconstruction grid
  ``val/reconstructions`` and the code histograms ``val/code_index``, ``val/code_log10_count``;
- ``switch/*`` (the deferred switch), ``run/config`` and ``run/run_info`` (text), and the HParams plugin's
  ``_hparams_/*`` summaries.

TensorBoard's scalar dashboard groups tags by their prefix up to the first ``/``; ``val/val_psnr`` would repeat the
group in every name, so the prefix is dropped.

Why not MONAI's ``TensorBoardStatsHandler`` alone: it writes ``engine.state.metrics`` under the metrics' own names
(its ``tag_name`` only names a scalar iteration output), so grouping epoch-level metrics takes its
``epoch_event_writer`` hook: :class:`MetricsWriter`. Iteration outputs are renamed with :func:`grouped_scalars` in its
``output_transform``. Neither MONAI nor Ignite writes a run's settings or hyper-parameters:
:class:`RunSummaryHandler`.

The hyper-parameters go into the run's own event files (``torch.utils.tensorboard.SummaryWriter.add_hparams`` writes
them to a new sub-folder with copies of the metric values): TensorBoard's HParams tab then reads each metric column as
the last value of the run's own scalar tag (``val/psnr`` ...), next to the run's curves, and a resumed run purges
them like every other tag.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events
from monai.utils import is_scalar

__all__ = ["MetricsWriter", "RunSummaryHandler", "grouped_scalars", "grouped_tag"]

logger = logging.getLogger(__name__)


def grouped_tag(group: str, name: str) -> str:
    """The TensorBoard tag of ``name`` in ``group``: ``("val", "val_psnr") -> "val/psnr"``, ``("train", "loss") ->
    "train/loss"``; a name that already has a group (``"switch/iteration"``) is kept as it is."""
    if "/" in name:
        return name
    return f"{group}/{name.removeprefix(group + '_')}"


def grouped_scalars(group: str, output: Mapping[str, Any]) -> dict[str, Any]:
    """``output`` with every key renamed by :func:`grouped_tag`: an ``output_transform`` for MONAI's
    ``TensorBoardStatsHandler`` (which writes each key of the dict it returns as a tag)."""
    return {grouped_tag(group, key): value for key, value in output.items()}


class MetricsWriter:
    """``epoch_event_writer`` for MONAI's ``TensorBoardStatsHandler``: every scalar of ``engine.state.metrics`` under
    :func:`grouped_tag` ``(group, name)`` (non-scalar entries, such as a metric's whole dict, are skipped as MONAI
    does).

    Args:
        group: the tag group, e.g. ``"val"`` (``val_psnr`` -> ``val/psnr``) or ``"train"``.
        global_epoch_transform: maps the epoch that completed to the TensorBoard step (the bundles'
            ``tensorboard_step``: the trainer iteration that ends the epoch). Default: the epoch itself. MONAI's own
            ``global_epoch_transform`` argument is not used once an ``epoch_event_writer`` is given.
    """

    def __init__(self, group: str, global_epoch_transform: Callable[[int], int] | None = None) -> None:
        if not isinstance(group, str) or not group or "/" in group:
            raise ValueError(f"group must be a non-empty name without '/', got {group!r}.")
        self.group = group
        self.global_epoch_transform = global_epoch_transform or (lambda epoch: epoch)

    def __call__(self, engine: Engine, writer: Any) -> None:
        step = int(self.global_epoch_transform(engine.state.epoch))
        for name, value in engine.state.metrics.items():
            if is_scalar(value):
                writer.add_scalar(grouped_tag(self.group, name), value, step)
        writer.flush()


def _markdown_table(settings: Mapping[str, Any]) -> str:
    rows = ["| setting | value |", "|---|---|"]
    for key, value in settings.items():
        text = json.dumps(value, default=str).replace("|", "\\|")
        rows.append(f"| `{key}` | `{text}` |")
    return "\n".join(rows)


def _text_summary(tag: str, text: str) -> Any:
    """torch's text summary under ``tag`` itself (``SummaryWriter.add_text`` appends ``/text_summary`` to the tag)."""
    from torch.utils.tensorboard.summary import text as text_summary

    summary = text_summary(tag, text)
    summary.value[0].tag = tag
    return summary


def _hparam_value(value: Any) -> bool | int | float | str:
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, default=str)  # None -> "null", lists -> "[1, 2]"


class RunSummaryHandler:
    """Write a training run's identity into its TensorBoard files.

    - At every start (Ignite's ``STARTED``: a fresh run at iteration 0, a resumed one at its checkpoint's iteration):
      ``settings`` as a markdown table under ``run/config`` and ``<run_info_dir>/run_info.json`` as JSON under
      ``run/run_info``.
    - At completion: the HParams plugin's experiment, session-start (``hparams``) and session-end summaries at the final
      iteration, naming ``metrics``, the scalar tags whose last values the HParams tab shows for the run.

    Limitations: TensorBoard's HParams tab takes its columns (hyper-parameter names and types, metric tags) from one
    run's experiment summary, picked arbitrarily, so every run meant to be compared must write the same ``hparams``
    names, each with one type, and the same ``metrics`` (a tag a run never logged shows as an empty cell); a setting
    whose type differs between runs (``quantize_start``: null, a number or ``"auto"``) is best given as a string.
    A run that never completes (killed) has no HParams entry until a resume completes it.

    Args:
        summary_writer: the run's ``torch.utils.tensorboard.SummaryWriter``.
        settings: the run's resolved settings (JSON-serialisable values; others are written with ``str``). Default:
            no ``run/config`` text.
        run_info_dir: folder of the ``run_info.json`` to write as ``run/run_info``; None (default) or a missing file
            writes none.
        hparams: hyper-parameter name -> value (bool, int, float or str; other values, None included, are written as
            their JSON text). Default: no HParams entry.
        metrics: scalar tags the HParams tab shows per run, e.g. ``["val/usage", "val/psnr"]``.
        config_tag, run_info_tag: text tags. Defaults ``"run/config"``, ``"run/run_info"``.
    """

    def __init__(
        self,
        summary_writer: Any,
        settings: Mapping[str, Any] | None = None,
        run_info_dir: str | Path | None = None,
        hparams: Mapping[str, Any] | None = None,
        metrics: Sequence[str] = (),
        config_tag: str = "run/config",
        run_info_tag: str = "run/run_info",
    ) -> None:
        if isinstance(metrics, str):
            raise TypeError(f"metrics must be a list of scalar tags, got the string {metrics!r}.")
        if hparams is not None and not hparams:
            raise ValueError("hparams must name at least one hyper-parameter (or be None for no HParams entry).")
        self.summary_writer = summary_writer
        self.settings = dict(settings) if settings is not None else None
        self.run_info_dir = Path(run_info_dir) if run_info_dir else None
        self.hparams = {str(k): _hparam_value(v) for k, v in hparams.items()} if hparams is not None else None
        self.metrics = tuple(metrics)
        self.config_tag = config_tag
        self.run_info_tag = run_info_tag

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.write_text)
        engine.add_event_handler(Events.COMPLETED, self.write_hparams)

    def write_text(self, engine: Engine) -> None:
        """``run/config`` and ``run/run_info`` at the trainer's current iteration."""
        step = int(engine.state.iteration)
        writer = self.summary_writer._get_file_writer()  # what SummaryWriter.add_text writes through
        if self.settings is not None:
            writer.add_summary(_text_summary(self.config_tag, _markdown_table(self.settings)), step)
        path = self.run_info_dir / "run_info.json" if self.run_info_dir is not None else None
        if path is not None and path.is_file():
            writer.add_summary(_text_summary(self.run_info_tag, f"```json\n{path.read_text().strip()}\n```"), step)
        self.summary_writer.flush()

    def write_hparams(self, engine: Engine) -> None:
        """The HParams summaries at the trainer's final iteration (its metrics are read from ``metrics``' tags)."""
        if self.hparams is None:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        # torch's builder takes the metric names from the dict's keys only; the values stay in the scalar tags
        summaries = hparams_summaries(self.hparams, dict.fromkeys(self.metrics, 0.0))
        writer = self.summary_writer._get_file_writer()  # what SummaryWriter.add_* write through
        step = int(engine.state.iteration)
        for summary in summaries:  # experiment, session start, session end
            writer.add_summary(summary, step)
        self.summary_writer.flush()
        logger.info("TensorBoard: hparams %s with metrics %s", self.hparams, list(self.metrics))
