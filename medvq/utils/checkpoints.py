"""Reading and writing ``.pt`` files with errors a user can act on (torch only: no Ignite, no MONAI).

``torch.load`` on a bad file says ``EOFError`` (empty), ``PytorchStreamReader failed reading zip archive`` (truncated)
or ``Weights only load failed`` (a pickle that is not plain tensors and containers), without naming the file; a
failed ``torch.save`` on a full disk says ``[enforce fail at inline_container.cc:...] unexpected pos``. The functions
here name the file, say what happened in plain words and what to do, and keep the original error as the cause.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "read_checkpoint", "state_size", "write_failure"]


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read or written; the message names the file and what to do."""


def read_checkpoint(path: str | os.PathLike, map_location: Any = None, hint: str = "") -> Any:
    """``torch.load(path, weights_only=True)`` with a clear error for a missing, empty, truncated or unsafe file.

    Args:
        path: the ``.pt`` file.
        map_location: ``torch.load``'s ``map_location``.
        hint: what the user can do instead (appended to every error), e.g. "resume from another checkpoint_<N>.pt".

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: empty, truncated or not a torch file, or a pickle that holds more than tensors (refused).
    """
    path = Path(path)
    tail = f" {hint}" if hint else ""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist.{tail}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(
            f"checkpoint '{path}' is empty (0 bytes): the write that made it was interrupted or the file was "
            f"truncated; delete it.{tail}"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        text = str(exc)
        if "Weights only load failed" in text or type(exc).__name__ == "UnpicklingError":
            why = ("holds objects other than tensors and plain containers, so it was refused (torch.load with "
                   "weights_only=True never runs code from a file); only load files medvq wrote")
        elif "zip archive" in text or "central directory" in text or isinstance(exc, EOFError):
            why = f"is truncated or not a torch file ({size} bytes): its write was cut short or it was corrupted"
        else:
            why = f"could not be read: {type(exc).__name__}: {text.splitlines()[0] if text else ''}"
        raise CheckpointError(f"checkpoint '{path}' {why}.{tail}") from exc


def _errnos(exc: BaseException) -> set[int]:
    found, seen = set(), set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno is not None:
            found.add(exc.errno)
        exc = exc.__cause__ or exc.__context__
    return found


def write_failure(path: str | os.PathLike, exc: BaseException, needed_bytes: int | None = None,
                  after: str = "") -> BaseException:
    """The error to raise when writing ``path`` failed with ``exc``: says "no space left on <dir>" first when the
    disk is full (``ENOSPC``, or torch's ``unexpected pos`` with less free space than the file needs) and "file size
    limit" for ``EFBIG``; otherwise names the file. ``after`` is appended (what survives, how to go on)."""
    path = Path(path)
    directory = path.parent
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        free = None
    codes = _errnos(exc)
    text = str(exc)
    free_text = f"{free / 2**20:.1f} MiB free" if free is not None else "free space unknown"
    need_text = f", the file needs about {needed_bytes / 2**20:.1f} MiB" if needed_bytes else ""
    full = errno.ENOSPC in codes or "No space left" in text or (
        "unexpected pos" in text and free is not None and needed_bytes is not None and free < 2 * needed_bytes)
    if full:
        message = f"no space left on {directory} while writing {path.name} ({free_text}{need_text})"
    elif errno.EFBIG in codes or "File too large" in text:
        message = (f"{path.name} hit the file-size limit while being written to {directory} (ulimit -f; "
                   f"{free_text}{need_text})")
    elif "unexpected pos" in text:
        message = (f"writing {path.name} to {directory} failed part-way ({free_text}{need_text}); the disk may be "
                   "full or the folder unwritable")
    else:
        first_line = text.splitlines()[0] if text else ""
        message = f"writing {path.name} to {directory} failed: {type(exc).__name__}: {first_line}"
    return CheckpointError(message + (f". {after}" if after else "."))


def state_size(obj: Any) -> int:
    """Bytes of the tensors in a (nested) state dict: about the size of its ``.pt`` file."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(state_size(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(state_size(v) for v in obj)
    return 0

