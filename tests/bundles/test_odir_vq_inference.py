"""The odir_vq bundle's inference overlay, run in-process through monai.bundle.ConfigWorkflow.

A tiny quickstart tokenizer is trained once (one epoch, one iteration, standard schedule so the codebook is active),
then inference.json tokenizes a folder of three resized ``skimage.data.retina()`` photographs. Cheap exact checks of
the helpers in ``medvq.inference`` come first.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from PIL import Image

from medvq.handlers import latest_checkpoint
from medvq.inference import TokenSaver, inference_datalist, load_tokenizer_checkpoint
from medvq.networks import vqgan_tiny
from medvq.transforms import fundus_preprocessing

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "bundles" / "odir_vq" / "configs"
TRAIN, INFERENCE = str(CONFIGS / "train.json"), str(CONFIGS / "inference.json")
QUICKSTART = str(ROOT / "configs" / "quickstart.json")
META, LOGGING = str(CONFIGS / "metadata.json"), str(CONFIGS / "logging.conf")
IMAGE_SIZE = 64  # quickstart


def _chain(exc: BaseException | None) -> list[BaseException]:
    """An exception and its causes (MONAI wraps an error raised in a config expression in a RuntimeError)."""
    chain = []
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _inference(*configs: str, run_id: str = "inference", **overrides) -> ConfigWorkflow:
    workflow = ConfigWorkflow(config_file=list(configs), meta_file=META, logging_file=LOGGING, workflow_type="infer",
                              run_id=run_id, **overrides)
    workflow.initialize()
    return workflow


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Output folder of a one-iteration quickstart training (16 generated images: 14 train, 2 validation)."""
    out = tmp_path_factory.mktemp("train")
    workflow = ConfigWorkflow(
        config_file=[TRAIN, QUICKSTART], meta_file=META, logging_file=LOGGING, workflow_type="train",
        run_id="training", output_dir=str(out), synthetic_images=16, synthetic_size=IMAGE_SIZE, num_epochs=1,
        quantize_start=None, discriminator_start=1000, checkpoint_every=1000, num_workers=0,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Three photographs; two share the stem 'eye' (in sub-folders) to exercise unique output names."""
    from skimage.data import retina

    folder = tmp_path_factory.mktemp("images")
    photo = Image.fromarray(retina())
    for rel, size, angle in (("a/eye.jpg", 160, 0), ("b/eye.jpg", 120, 30), ("other.png", 96, 60)):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        photo.resize((size, size)).rotate(angle).save(folder / rel)
    return folder


# ---------------------------------------------------------------------------------------------- cheap exact checks
def test_inference_datalist_needs_exactly_one_input(tmp_path, images):
    with pytest.raises(ValueError, match="give exactly one input: --input_dir .* or --input_datalist"):
        inference_datalist()
    with pytest.raises(ValueError, match="give exactly one input"):
        inference_datalist(input_dir=images, input_datalist=tmp_path / "d.json")
    with pytest.raises(FileNotFoundError, match="input_datalist '.*nope.json' does not exist"):
        inference_datalist(input_datalist=tmp_path / "nope.json")
    datalist = tmp_path / "d.json"
    datalist.write_text(json.dumps({"training": [{"image": "x.png", "label": [1.0]}], "validation": []}))
    with pytest.raises(ValueError, match=r"has no list 'test' \(it has \['training', 'validation'\]\)"):
        inference_datalist(input_datalist=datalist, key="test")
    with pytest.raises(ValueError, match="the 'validation' list of input_datalist .* is empty"):
        inference_datalist(input_datalist=datalist)
    # labels dropped, relative paths joined to the JSON's folder
    assert inference_datalist(input_datalist=datalist, key="training") == [{"image": str(tmp_path / "x.png")}]
    assert [Path(i["image"]).relative_to(images).as_posix() for i in inference_datalist(input_dir=images)] == [
        "a/eye.jpg", "b/eye.jpg", "other.png"]


def test_load_tokenizer_checkpoint_accepts_both_training_files_and_names_a_missing_one(tmp_path):
    source = vqgan_tiny(num_embeddings=16)
    torch.save(source.state_dict(), tmp_path / "model_final.pt")
    torch.save({"network": source.state_dict(), "trainer": {"epoch": 1}}, tmp_path / "checkpoint_7.pt")
    for name in ("model_final.pt", "checkpoint_7.pt"):
        target = vqgan_tiny(num_embeddings=16, quantize=False).train()
        assert load_tokenizer_checkpoint(target, tmp_path / name) is target
        assert not target.training and target.quantizer.active  # the active flag comes from the state dict
        assert torch.equal(target.quantizer.codebook, source.quantizer.codebook)
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: '.*missing.pt'.*--checkpoint"):
        load_tokenizer_checkpoint(source, tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: ''.*--checkpoint"):
        load_tokenizer_checkpoint(source, "")
    torch.save(torch.zeros(2), tmp_path / "tensor.pt")
    with pytest.raises(TypeError, match="holds a Tensor, not a state dict"):
        load_tokenizer_checkpoint(source, tmp_path / "tensor.pt")
    with pytest.raises(RuntimeError, match="does not fit the tokenizer .* same config"):
        load_tokenizer_checkpoint(vqgan_tiny(num_embeddings=32), tmp_path / "model_final.pt")


def test_load_tokenizer_checkpoint_warns_about_a_checkpoint_from_before_the_switch(tmp_path, caplog):
    torch.save(vqgan_tiny(num_embeddings=16, quantize=False).state_dict(), tmp_path / "early.pt")
    with caplog.at_level(logging.WARNING, logger="medvq.inference"):
        network = load_tokenizer_checkpoint(vqgan_tiny(num_embeddings=16), tmp_path / "early.pt")
    assert not network.quantizer.active
    assert "saved before quantization started (quantizer inactive)" in caplog.text


def test_token_saver_rejects_bad_arguments():
    with pytest.raises(ValueError, match="output_dir must be a folder path"):
        TokenSaver("")


# ---------------------------------------------------------------------------------------------- bundle runs
def test_inference_writes_reconstructions_token_maps_and_summary(trained, images, tmp_path):
    out = tmp_path / "run"
    # inference.json stands alone (the model zoo's layout): the quickstart overlay only sets the sizes
    workflow = _inference(INFERENCE, QUICKSTART, output_dir=str(out), input_dir=str(images),
                          checkpoint=str(trained / "checkpoints" / "model_final.pt"))
    assert workflow.check_properties() in (None, [])  # bundle_root, device, dataset_dir, dataset, evaluator, ...
    workflow.run()
    network = workflow.parser.get_parsed_content("network")
    workflow.finalize()
    assert "datalists" not in workflow.parser.ref_resolver.resolved_content
    assert sorted(p.name for p in out.iterdir()) == ["inference"]  # no datalist.json, no synthetic_data, no cache

    # 1. summary: one entry per input, unique names for the two 'eye' stems
    result = out / "inference"
    summary = json.loads((result / "tokens.json").read_text())
    items = summary["items"]
    assert [Path(i["image"]).relative_to(images).as_posix() for i in items] == ["a/eye.jpg", "b/eye.jpg", "other.png"]
    assert [i["tokens"] for i in items] == ["eye_tokens.npy", "eye_2_tokens.npy", "other_tokens.npy"]
    assert summary["run"]["num_embeddings"] == 256 and summary["run"]["image_size"] == IMAGE_SIZE
    with open(result / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["tokens"] for r in rows] == [i["tokens"] for i in items]

    # 2. files: RGB reconstructions of the image size, int64 token maps of the latent grid, indices in [0, K)
    grid = (IMAGE_SIZE // network.downsample_factor,) * 2
    assert grid == (16, 16)
    tokens = []
    for item, row in zip(items, rows):
        recon = Image.open(result / item["recon"])
        assert recon.mode == "RGB" and recon.size == (IMAGE_SIZE, IMAGE_SIZE)
        token_map = np.load(result / item["tokens"])
        assert token_map.dtype == np.int64 and token_map.shape == grid and tuple(item["token_grid"]) == grid
        assert 0 <= token_map.min() and token_map.max() < network.num_embeddings
        assert row["token_grid"] == "16x16"
        tokens.append(torch.from_numpy(token_map))

    # 3. the token maps are the network's tokens of the same preprocessed inputs; reconstructions decode them
    preprocessing = fundus_preprocessing(image_size=IMAGE_SIZE, train=False)
    inputs = torch.stack([preprocessing({"image": i["image"]})["image"].as_tensor() for i in items])  # (3, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(network.encode_to_indices(inputs), torch.stack(tokens))
        decoded = network.decode_indices(torch.stack(tokens)).clamp(-1, 1)  # (3, 3, 64, 64)
    for item, image, recon in zip(items, inputs, decoded):
        png = torch.from_numpy(np.array(Image.open(result / item["recon"]))).permute(2, 0, 1).float()  # (3, H, W)
        assert (png - (recon + 1) * 127.5).abs().max() <= 1.0  # uint8 rounding
        psnr = 10 * torch.log10(4 / torch.mean((recon.double() - image.double()) ** 2))
        assert item["psnr"] == pytest.approx(float(psnr), abs=1e-3)
    assert summary["mean_psnr"] == pytest.approx(np.mean([i["psnr"] for i in items]))


def test_inference_from_a_full_checkpoint_and_the_training_datalist(trained, tmp_path):
    checkpoint = latest_checkpoint(trained / "checkpoints")  # checkpoint_<iteration>.pt: networks, optimizers, ...
    workflow = _inference(INFERENCE, QUICKSTART, output_dir=str(trained), run_id="run",
                          input_datalist=str(trained / "datalist.json"), checkpoint=str(checkpoint),
                          inference_output_dir=str(tmp_path / "tokens"), batch_size=1)
    workflow.run()
    workflow.finalize()
    items = json.loads((tmp_path / "tokens" / "tokens.json").read_text())["items"]
    validation = json.loads((trained / "datalist.json").read_text())["validation"]
    assert [i["image"] for i in items] == [v["image"] for v in validation]
    assert all(np.load(tmp_path / "tokens" / i["tokens"]).shape == (16, 16) for i in items)


def test_missing_checkpoint_names_the_path_and_the_override(tmp_path, images):
    # with the quickstart overlay: the quickstart run's model_final.pt; alone: the bundle's models/model.pt
    for configs, expected in (((INFERENCE, QUICKSTART), tmp_path / "fresh" / "checkpoints" / "model_final.pt"),
                              ((INFERENCE,), tmp_path / "bundle" / "models" / "model.pt")):
        with pytest.raises(Exception) as info:
            _inference(*configs, output_dir=str(tmp_path / "fresh"), input_dir=str(images),
                       bundle_root=str(tmp_path / "bundle"))
        missing = [e for e in _chain(info.value) if isinstance(e, FileNotFoundError)]
        assert missing, _chain(info.value)
        assert str(expected) in str(missing[0])
        assert "pass --checkpoint <model_final.pt or checkpoint_<N>.pt>" in str(missing[0])


def test_inference_and_train_share_the_network_defaults():
    """inference.json stands alone, so it repeats train.json's network knobs: they must not drift apart."""
    train = json.loads(Path(TRAIN).read_text())
    inference = json.loads(Path(INFERENCE).read_text())
    for key in ("bundle_root", "output_dir", "device", "seed", "image_size", "batch_size", "num_workers", "amp",
                "network_preset", "num_embeddings", "embedding_dim", "commitment_cost", "codebook_update"):
        assert inference[key] == train[key], key
    tokenizer = train["network_def"][1:].replace("quantize=@quantize_start is None", "quantize=True")
    assert inference["network_def"] == f"$medvq.networks.tokens_as_forward({tokenizer})"
