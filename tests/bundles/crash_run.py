"""Run ``python -m monai.bundle <args>`` and SIGKILL the process in the middle of a file write (test harness).

Usage: ``python crash_run.py MODE N -- run training --config_file ...`` where MODE is

- ``checkpoint``: the N-th training checkpoint write (Ignite's atomic save into a ``tmpXXXXXXXX`` file) writes half
  of its bytes, then the process kills itself with SIGKILL, as a kill or a power cut during the write would;
- ``final``: the same during the write of ``model_final.pt.tmp`` (N is ignored);
- ``none``: no crash.

The kill is a real SIGKILL of a real bundle run: no handler, no ``finally`` and no flush runs after it.
"""

from __future__ import annotations

import io
import os
import runpy
import signal
import sys

import torch


def install(mode: str, n: int) -> None:
    real_save = torch.save
    count = {"checkpoint": 0}

    def die_half_written(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()[: buffer.tell() // 2]
        if hasattr(f, "write"):
            f.write(data)
            f.flush()
        else:
            with open(f, "wb") as out:
                out.write(data)
        os.kill(os.getpid(), signal.SIGKILL)

    def save(obj, f, *args, **kwargs):
        name = os.path.basename(str(getattr(f, "name", f)))
        if mode == "checkpoint" and name.startswith("tmp") and not name.endswith(".tmp"):
            count["checkpoint"] += 1
            if count["checkpoint"] == n:
                die_half_written(obj, f, *args, **kwargs)
        if mode == "final" and name == "model_final.pt.tmp":
            die_half_written(obj, f, *args, **kwargs)
        return real_save(obj, f, *args, **kwargs)

    torch.save = save


if __name__ == "__main__":
    mode, n, sep, *bundle_args = sys.argv[1:]
    assert sep == "--" and mode in ("checkpoint", "final", "none"), sys.argv
    install(mode, int(n))
    sys.argv = ["monai.bundle", *bundle_args]
    runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
