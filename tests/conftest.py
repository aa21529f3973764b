"""Shared fixtures: one tiny odir_var run (both stages and a sample.json pass) and one tiny odir_vq run, trained once
per session through MONAI's ConfigWorkflow and read by the tests of ``medvq.api`` and the ``medvq`` command."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VAR_CONFIGS = ROOT / "bundles" / "odir_var" / "configs"
VQ_CONFIGS = ROOT / "bundles" / "odir_vq" / "configs"
QUICKSTART = ROOT / "configs" / "quickstart.json"
# 32 px images -> 8x8 latent (msvqgan_tiny, factor 4) -> 4 scales, 1 + 4 + 16 + 64 = 85 tokens
VAR_TINY = {"image_size": 32, "scales": [1, 2, 4, 8], "num_embeddings": 32, "embedding_dim": 4, "synthetic_images": 24,
            "synthetic_size": 48, "num_workers": 0, "batch_size": 4, "checkpoint_every": 100,
            "discriminator_start": 1000}
VAR_SAMPLE = {"sample_conditions": ["G", "D+H"], "samples_per_condition": 3, "sample_batch_size": 2, "sample_seed": 7}


def load_benchmark(name: str):
    """The script ``benchmarks/<name>.py`` imported as a module (benchmarks are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_bundle(configs, run_id, meta_file, **overrides):
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(config_file=[str(c) for c in configs], workflow_type=None, run_id=run_id,
                              meta_file=str(meta_file), logging_file=False, **overrides)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow


@pytest.fixture(scope="session")
def var_run(tmp_path_factory) -> Path:
    """An odir_var run folder: ``tokenizer/``, ``generator/`` (2 epochs each) and ``generator/samples`` written by
    sample.json with :data:`VAR_SAMPLE`."""
    out = tmp_path_factory.mktemp("var_run")
    stage1, stage2, sample = (VAR_CONFIGS / f for f in ("train_tokenizer.json", "train.json", "sample.json"))
    meta = VAR_CONFIGS / "metadata.json"
    run_bundle([stage1, QUICKSTART], "training", meta, output_dir=str(out), **VAR_TINY, num_epochs=2,
               quantize_start=1, quantize_num_samples=512)
    run_bundle([stage1, stage2, QUICKSTART], "training", meta, output_dir=str(out), **VAR_TINY, generator_epochs=2,
               generator_batch_size=4, sample_interval=1, generator_warmup_iterations=2)
    run_bundle([stage1, stage2, QUICKSTART, sample], "sample", meta, output_dir=str(out), **VAR_TINY, **VAR_SAMPLE)
    return out


@pytest.fixture(scope="session")
def var_sample() -> dict:
    """The sample.json overrides :func:`var_run` sampled with."""
    return dict(VAR_SAMPLE)


@pytest.fixture(scope="session")
def vq_run(tmp_path_factory) -> Path:
    """An odir_vq quickstart run folder (64 px fundus images, 2 epochs, the switch after the first)."""
    out = tmp_path_factory.mktemp("vq_run") / "run"
    run_bundle([VQ_CONFIGS / "train.json", QUICKSTART], "training", VQ_CONFIGS / "metadata.json",
               output_dir=str(out), num_workers=0, checkpoint_every=1000, discriminator_start=1000, num_epochs=2,
               quantize_start=1, synthetic_images=24)
    return out
