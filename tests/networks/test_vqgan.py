"""VQGANTokenizer and presets: shapes, index round trips, deferral, gradients, tracing, MONAI bundle check, errors."""

from __future__ import annotations

import io
import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from monai.networks.blocks import SpatialAttentionBlock
from monai.networks.nets.autoencoderkl import AEKLResBlock, Encoder

from medvq.networks import PRESETS, TokenizerOutput, VQGANTokenizer, vqgan_f8, vqgan_f16, vqgan_tiny
from medvq.quantizers import QuantizerOutput

# (spatial_dims, image spatial shape): 2D and 3D from one parameter list; the tiny preset has factor 4
CASES = [(2, (32, 32)), (3, (8, 16, 8))]


def _images(spatial, batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, *spatial, generator=generator) * 2 - 1  # [-1, 1] as the contract says


def _tiny(spatial_dims, **kwargs):
    torch.manual_seed(0)
    return vqgan_tiny(spatial_dims=spatial_dims, **kwargs)


@pytest.mark.parametrize("spatial_dims,spatial", CASES)
def test_shapes(spatial_dims, spatial):
    net = _tiny(spatial_dims).eval()
    x = _images(spatial)
    tokens = tuple(s // 4 for s in spatial)
    with torch.no_grad():
        out = net.forward_with_output(x)
        assert isinstance(out, TokenizerOutput) and isinstance(out.quantizer, QuantizerOutput)
        assert net(x).shape == x.shape
        assert out.reconstruction.shape == x.shape
        assert out.latents.shape == (2, 8, *tokens)
        assert out.quantizer.quantized.shape == (2, 8, *tokens)
        torch.testing.assert_close(out.latents, net.encode(x))
        indices = net.encode_to_indices(x)
        assert indices.shape == (2, *tokens) and indices.dtype == torch.int64
        assert indices.equal(out.quantizer.indices)
        assert net.decode_indices(indices).shape == x.shape
    assert net.downsample_factor == 4
    assert net.latent_shape(spatial) == tokens


@pytest.mark.parametrize("spatial_dims,spatial", CASES)
def test_decode_indices_equals_decoding_the_quantized_latents(spatial_dims, spatial):
    net = _tiny(spatial_dims).eval()
    x = _images(spatial)
    with torch.no_grad():
        via_indices = net.decode_indices(net.encode_to_indices(x))
        via_codes = net.decode(net.quantize(net.encode(x)).quantized)
    # equal up to rounding: the straight-through output is z + (e - z), not e bit for bit
    torch.testing.assert_close(via_indices, via_codes, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("spatial_dims,spatial", CASES)
def test_pass_through_until_activated(spatial_dims, spatial):
    net = _tiny(spatial_dims, quantize=False, num_embeddings=16).eval()
    assert net.quantizer.active is False
    x = _images(spatial)
    with torch.no_grad():
        out = net.forward_with_output(x)
        latents = net.encode(x)
        assert out.quantizer.quantized.equal(out.latents)
        assert float(out.quantizer.loss) == 0.0
        torch.testing.assert_close(out.reconstruction, net.decode(latents))
        # the deferred switch: codebook from the current latents, then the decoder sees codes
        net.quantizer.activate(latents.movedim(1, -1).reshape(-1, 8), init="samples")  # (B, D, *T) -> (N, D)
        quantized = net.forward_with_output(x)
        assert net.quantizer.active is True
        torch.testing.assert_close(
            quantized.reconstruction, net.decode_indices(quantized.quantizer.indices), atol=1e-5, rtol=1e-5
        )
        assert not torch.allclose(quantized.reconstruction, out.reconstruction)


@pytest.mark.parametrize("spatial_dims,spatial", CASES)
def test_gradients_reach_encoder_codebook_and_last_layer(spatial_dims, spatial):
    net = _tiny(spatial_dims, num_embeddings=16).train()
    x = _images(spatial)
    out = net.forward_with_output(x)
    assert net.quantizer.active
    (F.l1_loss(out.reconstruction, x) + out.quantizer.loss).backward()
    # the straight-through estimator carries the reconstruction gradient through the argmin to every encoder weight
    missing = [name for name, p in net.encoder.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    assert net.quant_conv.conv.weight.grad.abs().sum() > 0
    assert net.quantizer.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("spatial_dims,spatial", CASES)
def test_last_layer_is_the_output_conv_and_gets_a_gradient(spatial_dims, spatial):
    net = _tiny(spatial_dims)
    last = net.last_layer
    assert last is net.decoder.blocks[-1].conv.weight
    assert last.shape == (3, 16, *(3,) * spatial_dims)  # (out_channels, channels[0], *kernel)
    x = _images(spatial)
    (grad,) = torch.autograd.grad(F.mse_loss(net(x), x), last)
    assert grad.shape == last.shape and grad.abs().sum() > 0


@pytest.mark.parametrize("spatial_dims,spatial", CASES)
def test_jit_trace_matches_forward_for_other_batch_sizes(spatial_dims, spatial):
    net = _tiny(spatial_dims).eval()
    # tiny distance blocks: the traced search must not be unrolled into the example's number of blocks
    net.quantizer.chunk_size = 64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings from the quantizer's input checks, jit deprecation
        traced = torch.jit.trace(net, _images(spatial, batch=2))
    assert net.quantizer.chunk_size == 64  # restored after tracing
    for batch in (2, 5):
        x = _images(spatial, batch=batch, seed=batch)
        with torch.no_grad():
            torch.testing.assert_close(traced(x), net(x))


@pytest.mark.parametrize("spatial_dims,spatial", CASES)
def test_activation_checkpointing_gives_the_same_values_and_gradients(spatial_dims, spatial):
    plain = _tiny(spatial_dims)
    checkpointed = _tiny(spatial_dims, use_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = _images(spatial)
    grads = []
    for net in (plain, checkpointed):
        out = net(x)
        grads.append(torch.autograd.grad(out.square().mean(), net.encoder.blocks[0].conv.weight)[0])
    torch.testing.assert_close(grads[0], grads[1])
    torch.testing.assert_close(checkpointed(x), plain(x))


@pytest.mark.parametrize("spatial_dims,spatial", CASES)
def test_flash_attention_matches_the_explicit_attention(spatial_dims, spatial):
    explicit = _tiny(spatial_dims).eval()
    fused = _tiny(spatial_dims, use_flash_attention=True).eval()
    fused.load_state_dict(explicit.state_dict())
    x = _images(spatial)
    with torch.no_grad():
        torch.testing.assert_close(fused.encode(x), explicit.encode(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("embedding_dim", [1, 8, 32])
def test_low_dimensional_codes(embedding_dim):
    net = _tiny(2, embedding_dim=embedding_dim, num_embeddings=32)
    x = _images((16, 16))
    out = net.forward_with_output(x)
    assert out.latents.shape == (2, embedding_dim, 4, 4)
    assert net.quantizer.codebook.shape == (32, embedding_dim)
    assert out.reconstruction.shape == x.shape


def test_encode_to_indices_never_changes_the_codebook():
    net = _tiny(2, codebook_update="ema", dead_code_threshold=1, num_embeddings=16).train()
    before = net.quantizer.weight.detach().clone()
    x = _images((16, 16))
    indices = net.encode_to_indices(x)
    assert net.quantizer.weight.equal(before)
    assert indices.equal(net.eval().encode_to_indices(x))
    net.train().forward_with_output(x)  # a training forward does update it (EMA, revival)
    assert not net.quantizer.weight.equal(before)


@pytest.mark.parametrize("spatial_dims,spatial", CASES)
def test_state_dict_round_trip_keeps_the_active_flag(spatial_dims, spatial):
    source = _tiny(spatial_dims, quantize=False, num_embeddings=16)
    with torch.no_grad():
        latents = source.encode(_images(spatial))
    source.quantizer.activate(latents.movedim(1, -1).reshape(-1, 8), init="samples")
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    target = _tiny(spatial_dims, quantize=False, num_embeddings=16)
    target.load_state_dict(torch.load(buffer, weights_only=True))
    assert target.quantizer.active is True
    torch.testing.assert_close(target.quantizer.codebook, source.quantizer.codebook)
    x = _images(spatial, seed=1)
    with torch.no_grad():
        assert target.eval().encode_to_indices(x).equal(source.eval().encode_to_indices(x))
    # and back: an inactive checkpoint turns a quantizing model into a pass-through
    target.load_state_dict(_tiny(spatial_dims, quantize=False, num_embeddings=16).state_dict())
    assert target.quantizer.active is False


def test_architecture_follows_taming():
    net = _tiny(2)

    def count(module, kind):
        return sum(isinstance(m, kind) for m in module.modules())

    # tiny: 3 levels x 1 res block + 2 in the middle block; the decoder has one more per level, as taming
    assert count(net.encoder, AEKLResBlock) == 3 * 1 + 2
    assert count(net.decoder, AEKLResBlock) == 3 * 2 + 2
    # attention at the lowest level only (1 per res block there) + the middle block's
    assert count(net.encoder, SpatialAttentionBlock) == 1 + 1
    assert count(net.decoder, SpatialAttentionBlock) == 2 + 1
    bare = VQGANTokenizer(channels=(8, 8), norm_num_groups=4, num_res_blocks=1, z_channels=8, embedding_dim=4,
                          num_embeddings=8, attention_levels=(False, False), with_nonlocal_attn=False)
    assert count(bare, SpatialAttentionBlock) == 0
    # SiLU between the final GroupNorm and the output conv (MONAI's blocks have none): outputs >= min(silu) ~ -0.2785
    with torch.no_grad():
        features = _images((16, 16))
        for block in net.encoder.blocks[:-1]:
            features = block(features)
    assert float(features.min()) >= -0.2785


def test_encoder_state_dict_keys_match_monai():
    # the SiLU-GroupNorm swap keeps MONAI's parameter names, so MONAI encoder weights load strictly
    net = _tiny(2)
    monai_encoder = Encoder(
        spatial_dims=2, in_channels=3, channels=(16, 32, 32), out_channels=32, num_res_blocks=(1, 1, 1),
        norm_num_groups=8, norm_eps=1e-6, attention_levels=(False, False, True),
    )
    net.encoder.load_state_dict(monai_encoder.state_dict(), strict=True)


def test_out_channels_and_attention_levels():
    net = VQGANTokenizer(in_channels=1, out_channels=2, channels=(8, 16), norm_num_groups=4, num_res_blocks=1,
                         z_channels=8, embedding_dim=4, num_embeddings=8, attention_levels=(True, False))
    assert net.downsample_factor == 2
    assert net(torch.zeros(1, 1, 8, 6)).shape == (1, 2, 8, 6)


@pytest.fixture(scope="module")
def f16():
    return vqgan_f16()


def test_presets(f16):
    assert set(PRESETS) == {"vqgan_f16", "vqgan_f8", "vqgan_tiny"}
    assert f16.channels == (128, 128, 256, 256, 512)
    assert f16.downsample_factor == 16 and f16.latent_shape(256) == (16, 16)
    assert f16.quantizer.num_embeddings == 8192 and f16.embedding_dim == 32
    # ~72 M parameters as taming's ImageNet f16 VQGAN
    assert 70e6 < sum(p.numel() for p in f16.parameters()) < 74e6
    with torch.no_grad():
        assert f16.eval().encode_to_indices(_images((32, 32))).shape == (2, 2, 2)
    f8 = vqgan_f8(spatial_dims=3, quantize=False, num_embeddings=1024)
    assert f8.downsample_factor == 8 and f8.latent_shape((128, 128, 64)) == (16, 16, 8)
    assert f8.quantizer.active is False and f8.spatial_dims == 3
    tiny = PRESETS["vqgan_tiny"](in_channels=1)
    assert tiny.downsample_factor == 4 and tiny.in_channels == tiny.out_channels == 1
    # small enough for CPU tests and the quickstart
    assert sum(p.numel() for p in tiny.parameters()) < 300_000
    with pytest.raises(TypeError):
        vqgan_tiny(2)  # keyword-only, as torchvision's builders


def test_monai_verify_net_in_out(tmp_path):
    from monai.bundle import verify_net_in_out

    image = {"type": "image", "format": "magnitude", "num_channels": 3, "spatial_shape": ["16*n", "16*n"],
             "dtype": "float32", "value_range": [-1, 1], "is_patch_data": False,
             "channel_def": {"0": "R", "1": "G", "2": "B"}}
    meta = {"network_data_format": {"inputs": {"image": image}, "outputs": {"pred": image}}}
    config = {"network_def": {"_target_": "medvq.networks.vqgan_tiny", "spatial_dims": 2, "quantize": False}}
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    (tmp_path / "inference.json").write_text(json.dumps(config))
    verify_net_in_out(
        net_id="network_def", meta_file=str(tmp_path / "metadata.json"),
        config_file=str(tmp_path / "inference.json"), device="cpu", n=2,
    )


# ---------------------------------------------------------------------------------------------------- errors
TINY = dict(channels=(8, 16), norm_num_groups=4, num_res_blocks=1, z_channels=8, embedding_dim=4, num_embeddings=8)

CONSTRUCTOR_ERRORS = [
    (dict(spatial_dims=1), ValueError, r"spatial_dims must be 2 or 3, got 1\."),
    (dict(spatial_dims=True), ValueError, r"spatial_dims must be 2 or 3, got True\."),
    (dict(in_channels=0), ValueError, r"in_channels must be an integer >= 1, got 0\."),
    (dict(out_channels=0), ValueError, r"out_channels must be an integer >= 1, got 0\."),
    (dict(channels=()), ValueError, r"channels must be a non-empty sequence of widths, got \(\)\."),
    (dict(channels=16), ValueError, r"channels must be a non-empty sequence of widths, got 16\."),
    (dict(channels=(8, 0)), ValueError, r"channels must be an integer >= 1, got 0\."),
    (dict(channels=(8, 10)), ValueError,
     r"every width in channels must be divisible by norm_num_groups=4, got \(8, 10\)\."),
    (dict(num_res_blocks=0), ValueError, r"num_res_blocks must be an integer >= 1, got 0\."),
    (dict(norm_num_groups=0), ValueError, r"norm_num_groups must be an integer >= 1, got 0\."),
    (dict(attention_levels=(True,)), ValueError,
     r"attention_levels must be None or 2 bools \(one per entry of channels\), got \(True,\)\."),
    (dict(attention_levels=(1, 0)), ValueError, r"attention_levels must be None or 2 bools"),
    (dict(z_channels=0), ValueError, r"z_channels must be an integer >= 1, got 0\."),
    (dict(embedding_dim=0), ValueError, r"embedding_dim must be an integer >= 1, got 0\."),
    (dict(num_embeddings=0), ValueError, r"num_embeddings must be an integer >= 1, got 0\."),
    (dict(codebook_update="adam"), ValueError, r"codebook_update must be one of \('gradient', 'ema'\), got 'adam'\."),
    (dict(with_nonlocal_attn=1), TypeError, r"with_nonlocal_attn must be a bool, got int\."),
    (dict(quantize="no"), TypeError, r"quantize must be a bool, got str\."),
    (dict(use_checkpointing=None), TypeError, r"use_checkpointing must be a bool, got NoneType\."),
    (dict(use_flash_attention=0), TypeError, r"use_flash_attention must be a bool, got int\."),
]


@pytest.mark.parametrize("kwargs,error,message", CONSTRUCTOR_ERRORS)
def test_constructor_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        VQGANTokenizer(**{**TINY, **kwargs})


@pytest.fixture(scope="module")
def small():
    return VQGANTokenizer(**TINY).eval()  # factor 2, 2D, 3 channels


INPUT_ERRORS = [
    ("forward", [[1.0]], TypeError, r"x must be a torch.Tensor \(B, in_channels, \*spatial\), got list\."),
    ("forward", torch.zeros(1, 3, 8), ValueError,
     r"x must have shape \(B, 3, \*spatial\) with spatial_dims=2 spatial dims, got shape \(1, 3, 8\)\."),
    ("encode", torch.zeros(1, 1, 8, 8), ValueError,
     r"x has 1 channels \(dim 1\) but in_channels is 3, shape \(1, 1, 8, 8\)\."),
    ("encode_to_indices", torch.zeros(1, 3, 8, 7), ValueError,
     r"image size \(8, 7\) is not divisible by the downsample factor 2 \(2 \*\* \(len\(channels\) - 1\)\); "
     r"resize or pad the images to a multiple of 2\."),
    ("decode", torch.zeros(1, 5, 4, 4), ValueError,
     r"quantized must have shape \(B, embedding_dim=4, \*tokens\) with 2 token dims, got shape \(1, 5, 4, 4\)\."),
    ("decode", "codes", TypeError, r"quantized must be a torch.Tensor \(B, embedding_dim, \*tokens\), got str\."),
    ("decode_indices", torch.zeros(1, 4, dtype=torch.long), ValueError,
     r"indices must have shape \(B, \*tokens\) with 2 token dims, got \(1, 4\)\."),
    ("decode_indices", torch.full((1, 2, 2), 8), ValueError, r"indices must lie in \[0, 8\)"),
    ("latent_shape", (8, 8, 8), ValueError,
     r"image_shape must be 2 positive sizes \(spatial_dims=2\), got \(8, 8, 8\)\."),
    ("latent_shape", 0, ValueError, r"image_shape must be 2 positive sizes \(spatial_dims=2\), got 0\."),
    ("latent_shape", (251, 256), ValueError, r"image size \(251, 256\) is not divisible by the downsample factor 2"),
]


@pytest.mark.parametrize("method,argument,error,message", INPUT_ERRORS)
def test_input_errors(small, method, argument, error, message):
    with pytest.raises(error, match=message):
        getattr(small, method)(argument)


def test_latent_shape_of_the_f16_preset_names_the_size(f16):
    with pytest.raises(ValueError, match=r"image size \(250, 250\) is not divisible by the downsample factor 16"):
        f16.latent_shape(250)


def test_tokens_as_forward_returns_token_maps_and_traces_for_any_batch_size():
    import warnings

    from medvq.networks import msvqgan_tiny, tokens_as_forward, vqgan_tiny

    torch.manual_seed(0)
    for network in (vqgan_tiny(), msvqgan_tiny()):
        network = tokens_as_forward(network).eval()
        x = torch.rand(4, 3, 32, 32) * 2 - 1
        tokens = network(x)
        assert tokens.dtype == torch.int64 and tokens.shape[:2] == (4, 1)
        flat = network.encode_to_indices(x)
        if isinstance(flat, list):  # multi-scale: every scale's map, coarse to fine
            flat = network.quantizer.flatten_indices(flat)
        assert torch.equal(tokens[:, 0], flat)
        assert network(x, return_output=True).reconstruction.shape == x.shape  # what the evaluators call
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about shape checks baked into the graph
            traced = torch.jit.trace(network, x[:1])  # traced on one image, used on four
        assert torch.equal(traced(x), tokens)
    with pytest.raises(TypeError, match="needs a VQGANTokenizer"):
        tokens_as_forward(torch.nn.Linear(2, 2))
