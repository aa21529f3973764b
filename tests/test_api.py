"""medvq.api: a trained tokenizer loaded from its run folder alone, its tokens equal to the bundle's inference's."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import skimage.data
from monai.bundle import ConfigWorkflow
from PIL import Image

from medvq.api import load_tokenizer
from medvq.data import make_example_dataset

ROOT = Path(__file__).resolve().parents[1]
FAST = {"num_workers": 0, "checkpoint_every": 1000, "discriminator_start": 1000, "num_epochs": 2, "quantize_start": 1}


def _run(configs, workflow_type, run_id, **overrides):
    workflow = ConfigWorkflow(config_file=[str(c) for c in configs], logging_file=False,
                              meta_file=str(Path(configs[0]).parent / "metadata.json"),
                              workflow_type=workflow_type, run_id=run_id, **overrides)
    workflow.initialize()
    workflow.run()
    workflow.finalize()


def test_fundus_tokenizer_from_its_run_folder_gives_the_bundles_tokens(tmp_path):
    bundle = ROOT / "bundles" / "odir_vq" / "configs"
    quickstart = ROOT / "configs" / "quickstart.json"
    run = tmp_path / "run"
    _run([bundle / "train.json", quickstart], "train", "training", output_dir=str(run), synthetic_images=24, **FAST)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(skimage.data.retina()).resize((300, 300)).save(photos / "retina.jpg")
    _run([bundle / "inference.json", quickstart], "infer", "inference", output_dir=str(run), input_dir=str(photos),
         inference_output_dir=str(tmp_path / "out"), num_workers=0)

    tokenizer = load_tokenizer(run, device="cpu")  # nothing but the folder: preset, sizes, preprocessing recorded
    assert tokenizer.modality == "fundus" and "vqgan_tiny" in repr(tokenizer)
    tokens = tokenizer.encode(photos / "retina.jpg")
    assert tokens.shape == (1, 16, 16)
    assert np.array_equal(tokens[0].numpy(), np.load(tmp_path / "out" / "retina_tokens.npy"))
    # an array in the input's units goes through the same pipeline after the file loader
    array = np.moveaxis(np.asarray(Image.open(photos / "retina.jpg").convert("RGB")), -1, 0)  # (3, H, W) 0..255
    assert np.array_equal(tokenizer.encode([array]).numpy(), tokens.numpy())
    images = tokenizer.decode(tokens)
    assert images.shape == (1, 3, 64, 64) and -1 <= float(images.min()) and float(images.max()) <= 1
    pixels = tokenizer.reconstruct(photos / "retina.jpg", units="input")
    assert 0 <= float(pixels.min()) and float(pixels.max()) <= 255
    assert np.allclose(pixels.numpy(), ((images + 1) * 127.5).numpy(), atol=1e-3)


def test_3d_mr_tokenizer_encodes_nifti_files_and_maps_back_to_mr_units(tmp_path):
    data = Path(make_example_dataset(tmp_path / "volumes", spatial_dims=3, num_variants=2)["output_dir"]) / "mr"
    bundle = ROOT / "bundles" / "image_vq" / "configs"
    run = tmp_path / "run"
    _run([bundle / "train.json", ROOT / "configs" / "quickstart_3d.json"], "train", "training", dataset_dir=str(data),
         modality="mr", group_by="file", output_dir=str(run), **FAST)
    tokenizer = load_tokenizer(run / "checkpoints" / "model_final.pt")  # a checkpoint file: run_info.json above it
    assert (tokenizer.modality, tokenizer.spatial_dims) == ("mr", 3)
    volume = min(data.glob("*.nii.gz"))
    tokens = tokenizer.encode([volume, volume])
    assert tokens.shape == (2, 8, 8, 8) and bool((tokens[0] == tokens[1]).all())
    recon = tokenizer.reconstruct(volume, units="input")
    low, high = json.loads((run / "run_info.json").read_text())["preprocessing"]["intensity"]["percentiles"]
    assert recon.shape == (1, 1, 32, 32, 32) and (low, high) == (0.5, 99.5)
    source = np.asarray(nib.load(volume).dataobj)
    assert float(recon.min()) >= float(np.percentile(source, 0.5)) - 1e-3
    assert float(recon.max()) <= float(np.percentile(source, 99.5)) + 1e-3


def test_multi_scale_tokenizer_from_an_odir_var_run_folder(tmp_path):
    bundle = ROOT / "bundles" / "odir_var" / "configs"
    run = tmp_path / "run"
    _run([bundle / "train_tokenizer.json", ROOT / "configs" / "quickstart.json"], None, "training",
         output_dir=str(run), synthetic_images=24, image_size=32, scales=[1, 2, 4, 8], **FAST)
    tokenizer = load_tokenizer(run)  # finds <run>/tokenizer/checkpoints/model_final.pt and its run_info.json
    photo = tmp_path / "retina.jpg"
    Image.fromarray(skimage.data.retina()).resize((200, 200)).save(photo)
    tokens = tokenizer.encode(photo)
    assert tokens.shape == (1, 1 + 4 + 16 + 64)  # every scale's map, coarse to fine
    assert tokenizer.decode(tokens).shape == (1, 3, 32, 32)


def test_missing_weights_or_settings_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no tokenizer weights in"):
        load_tokenizer(tmp_path / "empty")
    lone = tmp_path / "lone.pt"
    lone.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no run_info.json for"):
        load_tokenizer(lone)
    run = tmp_path / "old"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "model_final.pt").write_bytes(b"")
    (run / "run_info.json").write_text(json.dumps({"network_preset": "vqgan_tiny", "num_embeddings": 256}))
    with pytest.raises(ValueError, match="records no 'preprocessing'"):
        load_tokenizer(run)


def test_the_docs_and_readme_examples_run_verbatim(tmp_path, monkeypatch):
    doc = (ROOT / "docs" / "api.md").read_text().split("```python\n", 1)[1].split("```", 1)[0]
    readme = next(b.split("```", 1)[0] for b in (ROOT / "README.md").read_text().split("```python\n")[1:]
                  if "load_tokenizer" in b)
    monkeypatch.chdir(tmp_path)
    _run([ROOT / "bundles" / "odir_vq" / "configs" / "train.json", ROOT / "configs" / "quickstart.json"], "train",
         "training", output_dir="runs/quickstart", synthetic_images=24, **FAST)
    for name, block in (("docs/api.md", doc), ("README.md", readme)):
        namespace: dict = {}
        exec(compile(block, name, "exec"), namespace)  # noqa: S102  the documented example, run as written
        assert tuple(namespace["tokens"].shape) == (1, 16, 16), name
    assert tuple(namespace["recon"].shape) == (1, 3, 64, 64)


def test_batches_give_the_same_tokens_and_reconstructions_as_one_pass(vq_run, tmp_path):
    photos = []
    for i, (size, flip) in enumerate(((300, False), (240, True), (200, False))):
        array = skimage.data.retina()[::-1] if flip else skimage.data.retina()
        photos.append(tmp_path / f"retina_{i}.png")
        Image.fromarray(np.ascontiguousarray(array)).resize((size, size)).save(photos[-1])
    tokenizer = load_tokenizer(vq_run)
    tokens = tokenizer.encode(photos)
    assert tokens.shape == (3, 16, 16)
    assert np.array_equal(tokenizer.encode(photos, batch_size=1).numpy(), tokens.numpy())
    assert np.array_equal(tokenizer.encode(tokenizer.preprocess(photos), batch_size=2).numpy(), tokens.numpy())
    np.testing.assert_allclose(tokenizer.reconstruct(photos, units="input", batch_size=2).numpy(),
                               tokenizer.reconstruct(photos, units="input").numpy(), atol=2e-3)  # 0..255, float32
    np.testing.assert_allclose(tokenizer.decode(tokens, batch_size=1).numpy(), tokenizer.decode(tokens).numpy(),
                               atol=1e-5)
    with pytest.raises(ValueError, match="batch_size"):
        tokenizer.encode(photos, batch_size=0)
