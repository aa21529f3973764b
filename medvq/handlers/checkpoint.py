"""A training run's folder: atomic checkpoints, bounded retention, resume that never overwrites, finished runs kept.

Why not MONAI's ``CheckpointSaver``: it writes with ``DiskSaver(atomic=False)`` (to keep group read permissions), so
a run killed while saving leaves a truncated file as the newest checkpoint. :class:`CheckpointHandler` uses Ignite's
``Checkpoint`` with ``DiskSaver(atomic=True)`` (write to a temporary file, then rename). Retention is ours, not
Ignite's: Ignite's ``n_saved`` only counts the files the current process wrote, so after kills and resumes old
checkpoints pile up; :class:`CheckpointHandler` keeps the newest ``n_saved`` files of the folder, whoever wrote them.

Why not MONAI's ``CheckpointLoader`` for resuming: it calls ``torch.load`` bare (``EOFError`` for an empty file, a zip
error for a truncated one, a size-mismatch dump without the file name) and, for a run that already reached
``max_epochs``, Ignite then starts the run over from iteration 0 on top of the final weights.
:class:`ResumeFromCheckpoint` reads the file with :func:`medvq.utils.checkpoints.read_checkpoint`, loads it with
Ignite's ``Checkpoint.load_objects`` (what ``CheckpointLoader`` does inside), keeps the configured ``max_epochs`` (as
``CheckpointLoader`` does) and leaves a finished run as it is.

The states of a run folder ``<run>/checkpoints`` and what a start does in each (docs/architecture.md lists the files):

- empty: a fresh start.
- holds checkpoints but no ``--resume_from``: refused (:func:`check_run_folder`), naming the two ways on.
- unfinished (killed mid-run): ``--resume_from latest`` loads the newest ``checkpoint_<iteration>.pt`` and goes on.
- finished (the trainer's epoch in the newest checkpoint reached ``num_epochs``): ``--resume_from latest`` logs that
  the run is finished and trains nothing; if ``model_final.pt`` is missing (a crash while it was written), it is
  written from that checkpoint. With a larger ``num_epochs`` the run trains further from where it ended.
- temporary files of killed writes (Ignite's ``tmpXXXXXXXX``, ``*.tmp``): removed at the next start.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver

from medvq.utils.checkpoints import CheckpointError, read_checkpoint, state_size, write_failure
from medvq.utils.distributed import rank

__all__ = [
    "CheckpointHandler",
    "ResumeFromCheckpoint",
    "check_run_folder",
    "latest_checkpoint",
    "list_checkpoints",
    "resume_command",
    "tensorboard_purge_step",
]

logger = logging.getLogger(__name__)
_PREFIX = "checkpoint"
_FINAL = "model_final.pt"
_PATTERN = re.compile(rf"^{_PREFIX}_(\d+)\.pt$")
# Ignite's DiskSaver(atomic=True) writes through tempfile.NamedTemporaryFile(dir=save_dir): "tmp" + 8 characters
_TEMPORARY = re.compile(r"^(tmp[a-z0-9_]{8}|.+\.tmp)$")
_RESUME_HINT = ("Resume from another checkpoint_<N>.pt of the run (--resume_from <file>, or --resume_from latest), or "
                "start a new run in another --output_dir.")


class _Stateful:
    """Hides an object behind ``state_dict``/``load_state_dict`` so Ignite's checkpoint code never recurses into it.

    Ignite walks ``to_save`` as a tree and descends into anything that is a ``Sequence``: ``nn.Sequential`` models
    (MONAI's ``PatchDiscriminator``) are, and the walk never ends (RecursionError).
    """

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def state_dict(self) -> Any:
        return self.obj.state_dict()

    def load_state_dict(self, state: Any, *args: Any, **kwargs: Any) -> Any:
        return self.obj.load_state_dict(state, *args, **kwargs)


def _wrap(objects: dict[str, Any]) -> dict[str, Any]:
    for key, obj in objects.items():
        if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
            raise TypeError(f"checkpoint object {key!r} ({type(obj).__name__}) has no state_dict/load_state_dict.")
    return {key: _Stateful(obj) for key, obj in objects.items()}


def list_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """``(iteration, path)`` of every ``checkpoint_<iteration>.pt`` in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in directory.iterdir() if (m := _PATTERN.match(p.name)))


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint with the highest iteration in ``directory`` (files ``checkpoint_<iteration>.pt``), or None."""
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def _temporaries(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_file() and _TEMPORARY.match(p.name))


def resume_command(argv: list[str] | None = None) -> str:
    """The command that resumes this run: the current ``monai.bundle`` command line with ``--resume_from latest``
    (any ``--resume_from`` given is replaced), under ``torchrun`` when the run is distributed."""
    argv = list(sys.argv if argv is None else argv)
    if not argv or "monai" not in argv[0].replace(os.sep, "/") or "bundle" not in argv[0]:
        return "the same command with --resume_from latest"
    args, skip = [], False
    for i, arg in enumerate(argv[1:]):
        if skip:
            skip = False
            continue
        if arg == "--resume_from":
            skip = True
            continue
        if arg.startswith("--resume_from="):
            continue
        args.append(arg)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launcher = f"torchrun --nproc_per_node={world} -m monai.bundle" if world > 1 else "python -m monai.bundle"
    return " ".join([launcher, *(shlex.quote(a) for a in args), "--resume_from", "latest"])


def check_run_folder(
    run_dir: str | Path, resume_from: str | Path | None = "", epochs_argument: str = "--num_epochs"
) -> None:
    """Call first when a training starts, before any data is read: refuse to train over an existing run, remove the
    temporary files of killed writes, and log how to resume this run.

    Args:
        run_dir: the stage's run folder (its ``checkpoints/`` and ``tensorboard/`` are looked at).
        resume_from: the ``resume_from`` setting; empty means a fresh start.
        epochs_argument: the override that sets the stage's number of epochs, named in the message.

    Raises:
        FileExistsError: a fresh start (no ``resume_from``) into a folder that already holds a run: checkpoints, a
            final model or TensorBoard events. The message names the folder and the two ways on.
    """
    run_dir = Path(run_dir)
    checkpoint_dir = run_dir / "checkpoints"
    if rank() == 0:
        for path in _temporaries(checkpoint_dir):
            logger.warning("removing %s, a temporary file left by a write that was killed", path)
            path.unlink(missing_ok=True)
    if resume_from:
        ResumeFromCheckpoint(resume_from, {}, checkpoint_dir=checkpoint_dir).resolve()  # a missing file: say it now
    else:
        found = [p.name for _, p in list_checkpoints(checkpoint_dir)]
        if (checkpoint_dir / _FINAL).is_file():
            found.append(_FINAL)
        events = sorted((run_dir / "tensorboard").glob("events.out.tfevents.*"))
        if found:
            state = "a finished run" if (checkpoint_dir / _FINAL).is_file() else "an unfinished run"
            raise FileExistsError(
                f"'{run_dir}' already holds {state} ({', '.join(found[-3:])}); a run folder is never trained over. "
                f"To continue that run add --resume_from latest (a finished run then stays as it is unless "
                f"{epochs_argument} is raised); to start a new run pass another --output_dir."
            )
        if events:
            raise FileExistsError(
                f"'{run_dir}' already holds a run that stopped before its first checkpoint ({len(events)} TensorBoard "
                "event file(s) in tensorboard/, no checkpoint to resume from); a run folder is never trained over: "
                "delete that folder, or pass another --output_dir."
            )
    if rank() == 0:
        logger.info("run folder %s; if this run is interrupted, continue it with: %s", run_dir, resume_command())


def _checkpoint_iteration(path: Path) -> int | None:
    match = _PATTERN.match(path.name)
    if match:
        return int(match.group(1))
    state = read_checkpoint(path, map_location="cpu", hint=_RESUME_HINT)
    trainer = state.get("trainer") if isinstance(state, dict) else None
    return int(trainer["iteration"]) if isinstance(trainer, dict) and "iteration" in trainer else None


def tensorboard_purge_step(resume_from: str | Path | None, checkpoint_dir: str | Path) -> int | None:
    """``SummaryWriter(purge_step=...)`` for a run that resumes: the first iteration it will write again (the
    checkpoint's iteration + 1), so TensorBoard hides what the killed run logged after that checkpoint; None for a
    fresh start. All of a bundle's TensorBoard steps are trainer iterations, so one purge step fits every tag."""
    path = ResumeFromCheckpoint(resume_from, {}, checkpoint_dir=checkpoint_dir).resolve()
    if path is None:
        return None
    iteration = _checkpoint_iteration(path)
    return None if iteration is None else iteration + 1


class CheckpointHandler:
    """Save ``save_dict`` atomically every ``every_iterations`` iterations and when training completes.

    Files are ``save_dir/checkpoint_<iteration>.pt``; after every save the folder keeps its newest ``n_saved`` of them
    (also those earlier processes of the same run wrote). At completion the network's weights alone also go to
    ``save_dir/model_final.pt`` (what inference and ``load_state_dict`` users want), then the run's model card
    ``MODEL_CARD.md`` (:mod:`medvq.report.model_card`) beside ``save_dir``. A write of the weights that fails (a full disk)
    leaves the previous files intact and raises an error that says so.

    When :class:`ResumeFromCheckpoint` found the run finished, :meth:`attach` only writes a missing ``model_final.pt``
    (and then its card); a finished run's files, its card included, are otherwise left as they are.

    Args:
        save_dir: folder of the checkpoints (created).
        save_dict: objects with ``state_dict()``, e.g. ``{"network": ..., "optimizer": ..., "trainer": ...}``.
        every_iterations: save period in iterations (>= 1).
        n_saved: how many periodic checkpoints to keep (>= 1). Default 2.
        final_key: key of ``save_dict`` whose weights are written to ``model_final.pt``; None skips it.
        publish_to: also write the final weights to this file (the bundles: ``<bundle_root>/models/model.pt``, where
            the MONAI model zoo and the bundles' inference look), or None; the run's ``run_info.json`` (the folder
            above ``save_dir``), when there is one, is copied beside it as ``<publish_to without suffix>.json``
            (``models/model.json``: the preprocessing and channels inference reads back,
            :func:`medvq.report.checkpoint_run_info`), and so is the model card, as ``<publish_to stem>_card.md``
            (``models/model_card.md``; a bundle's ``docs/README.md`` is left alone). An existing file at any of these
            places is never replaced: that is an error when the handler is built, before any training.
        model_card: after ``model_final.pt``, write ``MODEL_CARD.md`` (:func:`medvq.report.write_model_card`: data,
            schedule and switch, the final validation metrics read back from ``tensorboard/``, intended use, limits)
            into the run folder above ``save_dir`` when it holds a ``run_info.json``. A card that cannot be written
            is a logged warning naming the file, never a lost model. Default True.
    """

    def __init__(
        self, save_dir: str | Path, save_dict: dict[str, Any], every_iterations: int, n_saved: int = 2,
        final_key: str | None = "network", publish_to: str | Path | None = None, model_card: bool = True,
    ) -> None:
        if isinstance(every_iterations, bool) or not isinstance(every_iterations, int) or every_iterations < 1:
            raise ValueError(f"every_iterations (checkpoint_every) must be an integer >= 1, got {every_iterations!r}.")
        if isinstance(n_saved, bool) or not isinstance(n_saved, int) or n_saved < 1:
            raise ValueError(f"n_saved must be an integer >= 1, got {n_saved!r}.")
        if final_key is not None and final_key not in save_dict:
            raise ValueError(f"final_key {final_key!r} is not a key of save_dict ({sorted(save_dict)}).")
        self.publish_to = Path(publish_to) if publish_to else None
        if self.publish_to is not None:
            if final_key is None:
                raise ValueError("publish_to needs final_key: the weights it publishes are model_final.pt's.")
            from medvq.report.model_card import published_card_path  # report imports handlers: import late

            for existing in (self.publish_to, self.publish_to.with_suffix(".json"), published_card_path(self.publish_to)):
                if existing.exists():
                    raise FileExistsError(
                        f"'{existing}' already exists and is never replaced: move it away (or pass "
                        "--publish_model False) before training a model to publish there."
                    )
        self.save_dir = Path(save_dir)
        self.save_dict = save_dict
        self.every_iterations = int(every_iterations)
        self.n_saved = n_saved
        self.final_key = final_key
        self.model_card = bool(model_card)
        self.checkpoint = Checkpoint(
            to_save=_wrap(save_dict),
            save_handler=DiskSaver(str(self.save_dir), require_empty=False, atomic=True, create_dir=True),
            filename_prefix="",
            filename_pattern=_PREFIX + "_{global_step}.{ext}",
            n_saved=None,  # retention is self._prune's, over the whole folder
            global_step_transform=lambda engine, _: engine.state.iteration,
        )

    def attach(self, engine: Engine) -> None:
        if getattr(engine.state, "run_finished", False):
            if self.final_key is not None and not (self.save_dir / _FINAL).is_file():
                logger.warning("%s is missing (its write was interrupted): writing it from the resumed checkpoint",
                               self.save_dir / _FINAL)
                self.write_final(engine)
            return
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every_iterations), self._save)
        engine.add_event_handler(Events.COMPLETED, self._complete)

    def _save(self, engine: Engine) -> None:
        target = self.save_dir / f"{_PREFIX}_{engine.state.iteration}.pt"
        if target.is_file():
            return  # already saved at this iteration (periodic save, then completion)
        after = (f"The newest complete checkpoint ({latest_checkpoint(self.save_dir) or 'none yet'}) is intact: free "
                 "space or move output_dir, then continue with --resume_from latest.")
        try:
            self.checkpoint(engine)
        except Exception as exc:
            raise write_failure(target, exc, state_size(_state_of(self.save_dict)), after) from exc
        self._prune()

    def _prune(self) -> None:
        for _, path in list_checkpoints(self.save_dir)[: -self.n_saved]:
            path.unlink(missing_ok=True)

    def write_final(self, engine: Engine | None = None) -> Path | None:
        """Write the network's weights to ``model_final.pt`` (a temporary file, then an atomic rename), publish them,
        then write the model card (``engine``: the trainer, whose epochs and iterations the card states; None reads
        them from the newest checkpoint)."""
        if self.final_key is None:
            return None
        module = self.save_dict[self.final_key]
        module = getattr(module, "module", module)  # DDP -> the model
        target = self.save_dir / _FINAL
        tmp = target.with_suffix(".pt.tmp")
        from medvq.quantizers import fold_codebook_projections  # quantizers import nothing of handlers; kept local

        # a codebook projection folded into its table (the same codes): MONAI's copy_model_state (ckpt_export) then
        # copies the right codes into a network built without the projection
        state = fold_codebook_projections(module.state_dict())
        try:
            torch.save(state, tmp)
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            after = (f"The last checkpoint ({latest_checkpoint(self.save_dir)}) is intact: free space, then run "
                     "again with --resume_from latest to write model_final.pt.")
            raise write_failure(target, exc, state_size(state), after) from exc
        tmp.replace(target)  # atomic on POSIX
        logger.info("wrote %s", target)
        if self.publish_to is not None:
            self.publish_to.parent.mkdir(parents=True, exist_ok=True)
            published = self.publish_to.with_name(self.publish_to.name + ".tmp")
            published.write_bytes(target.read_bytes())
            published.replace(self.publish_to)
            logger.info("published the final weights to %s", self.publish_to)
            run_info = self.save_dir.parent / "run_info.json"
            if run_info.is_file():
                record = self.publish_to.with_suffix(".json")
                tmp_record = record.with_name(record.name + ".tmp")
                tmp_record.write_bytes(run_info.read_bytes())
                tmp_record.replace(record)
                logger.info("published the run's settings to %s", record)
        if self.model_card:
            self._write_card(engine)
        return target

    def _write_card(self, engine: Engine | None) -> None:
        """``<run>/MODEL_CARD.md`` (and its published copy); after the weights, so a failure here loses none."""
        run_dir = self.save_dir.parent
        if not (run_dir / "run_info.json").is_file():
            return  # not a bundle's run folder: nothing to describe the model with
        from medvq.report.model_card import CARD_NAME, published_card_path, write_model_card  # report imports us

        state = getattr(engine, "state", None)
        training = None
        if state is not None and getattr(state, "iteration", None) is not None:
            training = {"iterations": int(state.iteration), "epochs": int(state.epoch),
                        "epoch_length": state.epoch_length, "max_epochs": state.max_epochs}
        target = run_dir / CARD_NAME
        try:
            write_model_card(run_dir, training=training, published=self.publish_to)
            logger.info("wrote the model card %s", target)
            if self.publish_to is not None:  # a copy, as run_info.json is copied to models/model.json
                target = published_card_path(self.publish_to)
                tmp = target.with_name(target.name + ".tmp")
                tmp.write_bytes((run_dir / CARD_NAME).read_bytes())
                tmp.replace(target)
                logger.info("published the model card to %s", target)
        except Exception as exc:  # noqa: BLE001  the card describes the weights; it must never cost them
            target.with_name(target.name + ".tmp").unlink(missing_ok=True)
            logger.warning("could not write the model card %s (%s: %s); the weights in %s are complete",
                           target, type(exc).__name__, exc, self.save_dir / _FINAL)

    def _complete(self, engine: Engine) -> None:
        self._save(engine)
        self.write_final(engine)


def _state_of(objects: dict[str, Any]) -> dict[str, Any]:
    return {key: obj.state_dict() for key, obj in objects.items() if hasattr(obj, "state_dict")}


class ResumeFromCheckpoint:
    """Load a checkpoint into ``load_dict`` at :meth:`attach` (before the run); a no-op when ``load_path`` is empty.

    Loading at attach time, not at the engine's STARTED event, means every handler that looks at the state when the
    run starts (the deferred-quantization switch, for one) already sees the restored networks and counters.

    A run whose checkpoint already reached the engine's ``max_epochs`` is finished: the engine's ``run`` then logs
    so and trains nothing (``engine.state.run_finished`` is True; :class:`CheckpointHandler` writes a missing
    ``model_final.pt``). A larger ``max_epochs`` than the checkpoint's trains further.

    Args:
        load_path: a checkpoint file, ``"latest"`` (the newest ``checkpoint_<iteration>.pt`` in ``checkpoint_dir``),
            or ``""``/None to start fresh.
        load_dict: the objects to restore, with the same keys as the saved ``save_dict``.
        checkpoint_dir: where ``"latest"`` looks, and where this run writes its checkpoints (resuming from an older
            checkpoint than the newest there is refused: its iterations' file names would be written again).
        map_location: device the tensors are loaded to.
        epochs_argument: the override that sets ``max_epochs``, named in the message of a finished run.

    Raises:
        FileNotFoundError: ``load_path`` (or the latest checkpoint) does not exist; the message names it.
        medvq.utils.checkpoints.CheckpointError: the file is empty, truncated, unsafe, or its tensors do not fit the
            networks this config builds (the message names the file and the overrides to check).
        FileExistsError: a newer checkpoint than ``load_path`` is in ``checkpoint_dir``.
    """

    def __init__(
        self, load_path: str | Path | None, load_dict: dict[str, Any], checkpoint_dir: str | Path | None = None,
        map_location: Any = None, epochs_argument: str = "--num_epochs",
    ) -> None:
        self.load_path = str(load_path) if load_path else ""
        self.epochs_argument = epochs_argument
        self.load_dict = load_dict
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.map_location = map_location

    def resolve(self) -> Path | None:
        """The file that will be loaded, or None for a fresh start."""
        if not self.load_path:
            return None
        if self.load_path == "latest":
            found = latest_checkpoint(self.checkpoint_dir) if self.checkpoint_dir else None
            if found is None:
                raise FileNotFoundError(
                    f"resume_from='latest' but no checkpoint_<iteration>.pt file is in {self.checkpoint_dir}: start "
                    "without --resume_from (in a new or empty --output_dir), or give a checkpoint file."
                )
            return found
        path = Path(self.load_path)
        if not path.is_file():
            raise FileNotFoundError(f"resume_from checkpoint not found: {path}. Give an existing file or 'latest'.")
        return path

    def attach(self, engine: Engine) -> None:
        path = self.resolve()
        if path is None:
            return
        logger.info("resuming from %s", path)
        state = read_checkpoint(path, map_location=self.map_location, hint=_RESUME_HINT)
        if not isinstance(state, dict):
            raise CheckpointError(f"checkpoint '{path}' holds a {type(state).__name__}, not a training checkpoint.")
        missing = [key for key in self.load_dict if key not in state]
        if missing:
            raise CheckpointError(
                f"checkpoint '{path}' is not a training checkpoint of this config: it lacks {missing} (it holds "
                f"{sorted(state)}). model_final.pt holds weights only; resume from a checkpoint_<N>.pt of the same "
                "bundle stage."
            )
        prior_max_epochs = engine.state.max_epochs
        try:
            Checkpoint.load_objects(to_load=_wrap(self.load_dict), checkpoint=state)
        except (RuntimeError, ValueError, KeyError) as exc:
            text = str(exc)
            raise CheckpointError(
                f"checkpoint '{path}' does not fit what this config builds (another preset or sizes: "
                "network_preset / tokenizer_preset / generator_preset, num_embeddings, embedding_dim, image_size, "
                "...): resume with the same config files and overrides as the run that wrote it, or start a new run "
                f"in another --output_dir. {text[:600] + (' ...' if len(text) > 600 else '')}"
            ) from exc
        iteration, epoch = engine.state.iteration, engine.state.epoch
        newer = [p for it, p in list_checkpoints(self.checkpoint_dir or path.parent) if it > iteration]
        if newer:
            raise FileExistsError(
                f"'{path}' is at iteration {iteration} but {newer[-1]} is newer: resuming from it would write "
                "checkpoints of other weights under names that already exist. Resume with --resume_from latest, or "
                f"copy '{path.name}' to a new --output_dir's checkpoints/ folder and resume there."
            )
        engine.state.max_epochs = prior_max_epochs
        if prior_max_epochs is not None and epoch >= prior_max_epochs:
            engine.state.run_finished = True
            message = (f"the run in {path.parent.parent} is finished: {path.name} is at epoch {epoch} (iteration "
                       f"{iteration}) and num_epochs is {prior_max_epochs}; nothing is trained and no checkpoint is "
                       f"rewritten. To train further, raise {self.epochs_argument} above {epoch}.")
            logger.info(message)

            def _finished_run(*args: Any, **kwargs: Any) -> None:
                logger.info(message)

            engine.run = _finished_run  # instance attribute: the engine's Ignite run would restart from iteration 0
        else:
            logger.info("resumed at iteration %d (epoch %d of %s)", iteration, epoch, prior_max_epochs)
