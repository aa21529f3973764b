"""Atomic training checkpoints and resuming from them.

Why not MONAI's ``CheckpointSaver``: it writes with ``DiskSaver(atomic=False)`` (to keep group read permissions), so
a run killed while saving leaves a truncated file as the newest checkpoint. :class:`CheckpointHandler` uses Ignite's
``Checkpoint`` with ``DiskSaver(atomic=True)`` (write to a temporary file, then rename), and
:class:`ResumeFromCheckpoint` loads one through MONAI's ``CheckpointLoader`` (``torch.load(weights_only=True)``).

A checkpoint holds whatever ``save_dict`` names; the bundles save both networks, both optimizers, the scheduler,
the GradScalers and the trainer (iteration, epoch). The quantizer's ``active`` flag lives in the network's state dict,
so the deferred-quantization switch resumes in the right phase.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver

__all__ = ["CheckpointHandler", "ResumeFromCheckpoint", "latest_checkpoint"]

logger = logging.getLogger(__name__)
_PREFIX = "checkpoint"
_PATTERN = re.compile(rf"^{_PREFIX}_(\d+)\.pt$")


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


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint with the highest iteration in ``directory`` (files ``checkpoint_<iteration>.pt``), or None."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _PATTERN.match(p.name))]
    return max(found)[1] if found else None


class CheckpointHandler:
    """Save ``save_dict`` atomically every ``every_iterations`` iterations and when training completes.

    Files are ``save_dir/checkpoint_<iteration>.pt``, the newest ``n_saved`` kept; at completion the network's
    weights alone also go to ``save_dir/model_final.pt`` (what inference and ``load_state_dict`` users want).

    Args:
        save_dir: folder of the checkpoints (created).
        save_dict: objects with ``state_dict()``, e.g. ``{"network": ..., "optimizer": ..., "trainer": ...}``.
        every_iterations: save period in iterations (>= 1).
        n_saved: how many periodic checkpoints to keep. Default 2.
        final_key: key of ``save_dict`` whose weights are written to ``model_final.pt``; None skips it.
    """

    def __init__(
        self, save_dir: str | Path, save_dict: dict[str, Any], every_iterations: int, n_saved: int = 2,
        final_key: str | None = "network",
    ) -> None:
        if every_iterations < 1:
            raise ValueError(f"every_iterations must be >= 1, got {every_iterations!r}.")
        if final_key is not None and final_key not in save_dict:
            raise ValueError(f"final_key {final_key!r} is not a key of save_dict ({sorted(save_dict)}).")
        self.save_dir = Path(save_dir)
        self.save_dict = save_dict
        self.every_iterations = int(every_iterations)
        self.final_key = final_key
        self.checkpoint = Checkpoint(
            to_save=_wrap(save_dict),
            save_handler=DiskSaver(str(self.save_dir), require_empty=False, atomic=True, create_dir=True),
            filename_prefix="",
            filename_pattern=_PREFIX + "_{global_step}.{ext}",
            n_saved=n_saved,
            global_step_transform=lambda engine, _: engine.state.iteration,
        )

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every_iterations), self._save)
        engine.add_event_handler(Events.COMPLETED, self._complete)

    def _save(self, engine: Engine) -> None:
        if latest_checkpoint(self.save_dir) == self.save_dir / f"{_PREFIX}_{engine.state.iteration}.pt":
            return  # already saved at this iteration
        self.checkpoint(engine)

    def _complete(self, engine: Engine) -> None:
        self._save(engine)
        if self.final_key is not None:
            module = self.save_dict[self.final_key]
            module = getattr(module, "module", module)  # DDP -> the model
            target = self.save_dir / "model_final.pt"
            tmp = target.with_suffix(".pt.tmp")
            torch.save(module.state_dict(), tmp)
            tmp.replace(target)  # atomic on POSIX
            logger.info("wrote %s", target)


class ResumeFromCheckpoint:
    """Load a checkpoint into ``load_dict`` at :meth:`attach` (before the run); a no-op when ``load_path`` is empty.

    Loading at attach time, not at the engine's STARTED event, means every handler that looks at the state when the
    run starts (the deferred-quantization switch, for one) already sees the restored networks and counters.

    Args:
        load_path: a checkpoint file, ``"latest"`` (the newest ``checkpoint_<iteration>.pt`` in ``checkpoint_dir``),
            or ``""``/None to start fresh.
        load_dict: the objects to restore, with the same keys as the saved ``save_dict``.
        checkpoint_dir: where ``"latest"`` looks.
        map_location: device the tensors are loaded to.

    Raises:
        FileNotFoundError: ``load_path`` (or the latest checkpoint) does not exist; the message names it.
    """

    def __init__(
        self, load_path: str | Path | None, load_dict: dict[str, Any], checkpoint_dir: str | Path | None = None,
        map_location: Any = None,
    ) -> None:
        self.load_path = str(load_path) if load_path else ""
        self.load_dict = load_dict
        self.checkpoint_dir = checkpoint_dir
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
                    "without --resume_from, or give a checkpoint file."
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
        from monai.handlers import CheckpointLoader

        logger.info("resuming from %s", path)
        loader = CheckpointLoader(load_path=str(path), load_dict=_wrap(self.load_dict), map_location=self.map_location)
        loader(engine)
