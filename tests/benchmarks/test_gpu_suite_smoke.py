"""Smoke run of ``bash benchmarks/gpu.sh --smoke``: the real script in a subprocess on the CPU with the tiny presets.
Checks that every section of the suite reports (a positive throughput, or the recorded reason its torch.compile
section is skipped in smoke mode) and that the summary table is printed, never the timings."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("vqgan_f16_eager", "msvqgan_f16_eager", "var_d16_train", "var_d16_sample", "kmeans",
            "vqgan_f16_compiled", "msvqgan_f16_compiled")


def test_gpu_sh_smoke_reports_every_section(tmp_path):
    out = tmp_path / "smoke.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(["bash", "benchmarks/gpu.sh", "--smoke", "--json", str(out)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=180, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["smoke"] is True and summary["device"].startswith("cpu")
    assert tuple(summary["sections"]) == SECTIONS
    for name, record in summary["sections"].items():
        if name.endswith("_compiled"):
            assert record["status"] == "skipped" and "--compile-backend" in record["reason"], (name, record)
            continue
        assert record["status"] == "ok", (name, record)
        assert record["throughput"] > 0 and record["seconds_per_iteration"] > 0, (name, record)
        assert record["timed_iterations"] >= 1 and record["batch"] >= 1
        assert record["peak_memory_gib"] is None  # CPU: no CUDA allocator to read
    for name in ("vqgan_f16_eager", "msvqgan_f16_eager", "var_d16_train"):
        assert summary["sections"][name]["flops_per_iteration"] > 0  # counted, so MFU is computable on a GPU
    assert summary["sections"]["vqgan_f16_eager"]["model"] == "vqgan_tiny"
    assert summary["sections"]["kmeans"]["model"] == "512x32->64"
    lines = run.stdout.splitlines()
    assert any(line.startswith("nvidia-smi") or "NVIDIA" in line for line in lines)  # the machine header
    table = lines.index(next(line for line in lines if line.startswith("section ")))
    assert [line.split()[0] for line in lines[table + 2: table + 2 + len(SECTIONS)]] == list(SECTIONS)
    assert lines[-1].startswith("total ") and "budget" in lines[-1]
