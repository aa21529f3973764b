"""medvq.api.load_generator / Generator.generate: a trained odir_var run sampled from Python gives the images and
records of the bundle's sample.json, with the checkpoints' and the training datalist's sha256 in each record."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medvq.api import load_generator
from medvq.handlers import file_sha256

ROOT = Path(__file__).resolve().parents[1]


def test_generate_gives_the_images_and_records_of_sample_json(var_run, var_sample):
    generator = load_generator(var_run)
    assert generator.condition_names == ["N", "D", "G", "C", "A", "H", "M", "O"]
    samples = generator.generate(var_sample["sample_conditions"], num_samples=var_sample["samples_per_condition"],
                                 seed=var_sample["sample_seed"], batch_size=var_sample["sample_batch_size"])
    assert len(samples) == 6 and samples.images.shape == (6, 3, 32, 32) and samples.tokens.shape == (6, 85)
    assert samples.conditions == ["G"] * 3 + ["D+H"] * 3
    assert float(samples.images.min()) >= -1 and float(samples.images.max()) <= 1
    folder = var_run / "generator" / "samples"
    for i, (name, record) in enumerate(zip(samples.conditions, samples.provenance)):
        sidecar = json.loads((folder / name / f"{name}_{i % 3:04d}.json").read_text())
        assert record["tokens"] == sidecar["tokens"] == samples.tokens[i].tolist()
        assert record["batch_seed"] == sidecar["batch_seed"]
        assert {k: v for k, v in record.items() if k != "created"} == \
            {k: v for k, v in sidecar.items() if k not in ("created", "file")}
        written = np.asarray(Image.open(folder / name / f"{name}_{i % 3:04d}.png"), dtype=np.float32)
        np.testing.assert_allclose((samples.images[i].permute(1, 2, 0).numpy() + 1) * 127.5, written, atol=0.51)
    record = samples.provenance[0]
    assert record["synthetic"] is True and "must not be used for diagnosis" in record["notice"]
    assert record["checkpoints"]["generator"]["sha256"] == file_sha256(var_run / "generator/checkpoints/model_final.pt")
    assert record["checkpoints"]["tokenizer"]["sha256"] == file_sha256(var_run / "tokenizer/checkpoints/model_final.pt")
    assert record["training_data"]["datalist"]["sha256"] == file_sha256(var_run / "datalist.json")


def test_generate_is_seeded_conditional_and_maps_to_pixels(var_run):
    generator = load_generator(var_run / "generator")  # the generator folder alone finds its tokenizer beside it
    a = generator.generate("N", num_samples=2, seed=1)
    b = generator.generate("N", num_samples=2, seed=1)
    c = generator.generate("N", num_samples=2, seed=2)
    assert torch.equal(a.tokens, b.tokens) and not torch.equal(a.tokens, c.tokens)
    pixels = generator.generate("N", num_samples=2, seed=1, units="input")
    torch.testing.assert_close(pixels.images, (a.images + 1) * 127.5, atol=1e-3, rtol=0)
    assert pixels.provenance[0]["units"] == "input"
    unconditional = generator.generate("null", num_samples=1)
    assert unconditional.provenance[0]["condition"]["vector"] is None
    with pytest.raises(ValueError, match="'X'"):
        generator.generate("X")
    with pytest.raises(ValueError, match="num_samples"):
        generator.generate("N", num_samples=0)


def test_a_tokenizer_that_is_not_the_generators_is_refused(var_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(var_run, copy, ignore=shutil.ignore_patterns("samples", "tensorboard"))
    weights = copy / "tokenizer" / "checkpoints" / "model_final.pt"
    state = torch.load(weights, weights_only=True)
    state["quantizer.codes.weight"] = state["quantizer.codes.weight"] + 1
    torch.save(state, weights)
    with pytest.raises(ValueError, match="is not the one the generator"):
        load_generator(copy)


def test_wrong_paths_are_named(var_run, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_generator(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no generator weights"):
        load_generator(var_run / "tokenizer")
    with pytest.raises(ValueError, match="is not a generator"):
        load_generator(var_run / "tokenizer" / "checkpoints" / "model_final.pt")


def _python_blocks(path, needle):
    text = (ROOT / path).read_text()
    return [b for b in (part.split("```", 1)[0] for part in text.split("```python\n")[1:]) if needle in b]


def test_the_docs_and_readme_generator_examples_run_verbatim(var_run, tmp_path, monkeypatch):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "quickstart_var").symlink_to(var_run, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    blocks = [("docs/api.md", b) for b in _python_blocks("docs/api.md", "load_generator")]
    blocks += [("README.md", b) for b in _python_blocks("README.md", "load_generator")]
    assert len(blocks) == 2
    for name, block in blocks:
        namespace: dict = {}
        exec(compile(block, name, "exec"), namespace)  # noqa: S102  the documented example, run as written
        samples = namespace["samples"]
        assert samples.conditions[0] == "G" and samples.provenance[0]["synthetic"] is True, name


def test_the_readme_quantizer_example_runs_verbatim():
    (block,) = _python_blocks("README.md", "VectorQuantizer(")
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102  the documented example, run as written
    assert namespace["vq"].active and namespace["report"].usage > 0.5


def test_a_published_bundle_folder_loads_the_generator_with_its_tokenizer(var_run, tmp_path):
    """What --publish_model True leaves in <bundle_root>/models/: model.pt + model.json, generator.pt + generator.json."""
    models = tmp_path / "bundle" / "models"
    models.mkdir(parents=True)
    for stage, name in (("tokenizer", "model"), ("generator", "generator")):
        shutil.copy(var_run / stage / "checkpoints" / "model_final.pt", models / f"{name}.pt")
        shutil.copy(var_run / stage / "run_info.json", models / f"{name}.json")
    generator = load_generator(tmp_path / "bundle")
    assert generator.checkpoint == models / "generator.pt" and generator.tokenizer.checkpoint == models / "model.pt"
    assert generator.training_data is None  # a bundle folder holds no datalist: the records say so
    samples = generator.generate("G", num_samples=2, seed=3)
    reference = load_generator(var_run).generate("G", num_samples=2, seed=3)
    assert torch.equal(samples.tokens, reference.tokens) and "training_data" not in samples.provenance[0]


def test_loading_encoding_and_generating_run_no_engine(var_run, vq_run):
    """No Ignite engine on the Python path: medvq's engines are not even imported (Ignite itself is, by ``import
    monai``: monai.utils.enums imports it when it is installed; medvq.handlers' hashing and view helpers are used)."""
    import subprocess
    import sys

    script = (
        "import sys, torch\n"
        "from medvq.api import load_generator, load_tokenizer\n"
        f"tokenizer = load_tokenizer({str(vq_run)!r})\n"
        "tokens = tokenizer.encode(torch.zeros(1, 3, 64, 64))\n"
        "tokenizer.decode(tokens)\n"
        f"load_generator({str(var_run)!r}).generate('G', num_samples=1)\n"
        "print(sorted(m for m in sys.modules if m.startswith('medvq.engines')))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
