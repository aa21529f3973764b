"""MultiScaleVQGANTokenizer: shapes, token maps round trip, trained by TokenizerTrainer with the deferred switch on
the residual pyramid, and validated by TokenizerEvaluator + CodebookCoverage."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events

from medvq.engines import TokenizerEvalKeys, TokenizerEvaluator, TokenizerKeys, TokenizerTrainer
from medvq.handlers import DeferredQuantizationHandler
from medvq.losses import ReconstructionLoss
from medvq.metrics import CodebookCoverage
from medvq.networks import msvqgan_f16, msvqgan_tiny
from medvq.quantizers import MultiScaleResidualQuantizer


@pytest.mark.parametrize("spatial_dims,scales,size", [(2, (1, 2, 4), 16), (3, (1, (1, 2, 2), 4), 16)])
def test_shapes_and_token_round_trip(spatial_dims, scales, size):
    torch.manual_seed(0)
    net = msvqgan_tiny(spatial_dims=spatial_dims, scales=scales, num_embeddings=32, embedding_dim=4)
    assert isinstance(net.quantizer, MultiScaleResidualQuantizer)
    x = torch.rand(2, 3, *(size,) * spatial_dims) * 2 - 1
    out = net(x, return_output=True)
    assert out.reconstruction.shape == x.shape
    maps = net.encode_to_indices(x)
    assert [tuple(m.shape[1:]) for m in maps] == list(net.scales)
    assert all(m.equal(o) for m, o in zip(maps, out.quantizer.indices))
    # active quantizer: forward decodes exactly what the token maps decode to (also from the flat sequence)
    net.eval()
    torch.testing.assert_close(net.decode_indices(maps), net(x))
    torch.testing.assert_close(net.decode_indices(net.quantizer.flatten_indices(maps)), net(x))


def test_image_size_must_match_the_last_scale():
    net = msvqgan_tiny(scales=(1, 2, 4))
    with pytest.raises(ValueError, match=r"resize the images to \(16, 16\)"):
        net(torch.zeros(1, 3, 32, 32))


def test_f16_preset_is_vars_tokenizer_size():
    net = msvqgan_f16()
    assert net.downsample_factor == 16 and net.image_shape == (256, 256)
    assert net.quantizer.num_embeddings == 4096 and net.embedding_dim == 32
    assert 100e6 < sum(p.numel() for p in net.parameters()) < 120e6  # VAR's vae_ch=160 tokenizer is ~109 M
    # VAR's VQVAE: quant_conv_ks=3 for both projections (taming's VQGAN uses 1x1)
    assert net.quant_conv.conv.kernel_size == (3, 3) and net.post_quant_conv.conv.kernel_size == (3, 3)


def test_quant_conv_kernel_size():
    from medvq.networks import vqgan_tiny

    assert vqgan_tiny().quant_conv.conv.kernel_size == (1, 1)  # taming
    net = msvqgan_tiny(scales=(1, 2, 4, 8), quant_conv_kernel_size=1)
    assert net.quant_conv.conv.kernel_size == (1, 1)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert msvqgan_tiny(scales=(1, 2, 4, 8))(x).shape == x.shape  # 3x3, padded: same grid
    with pytest.raises(ValueError, match="quant_conv_kernel_size must be 1 .taming. or 3 .VAR."):
        msvqgan_tiny(quant_conv_kernel_size=5)


def test_codebook_lr_scale_groups():
    from medvq.engines import tokenizer_parameter_groups

    torch.manual_seed(0)
    net = msvqgan_tiny(scales=(1, 2, 4, 8), num_embeddings=32, embedding_dim=4)
    groups = tokenizer_parameter_groups(net, lr=1e-2, codebook_lr_scale=0.0)
    assert [g["lr"] for g in groups] == [1e-2, 0.0] and groups[1]["params"] == [net.quantizer.codes.weight]
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    optimizer = torch.optim.Adam(groups, lr=1e-2)
    codebook, conv = net.quantizer.codebook.detach().clone(), net.quant_conv.conv.weight.detach().clone()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    for _ in range(2):
        optimizer.zero_grad()
        out = net(x, return_output=True)
        ((out.reconstruction - x).abs().mean() + out.quantizer.loss).backward()
        optimizer.step()
    assert torch.equal(net.quantizer.codebook, codebook)  # frozen
    assert not torch.equal(net.quant_conv.conv.weight, conv)  # the rest learns
    with pytest.raises(ValueError, match="codebook_lr_scale must be >= 0"):
        tokenizer_parameter_groups(net, lr=1e-2, codebook_lr_scale=-1)
    with pytest.raises(ValueError, match="lr must be > 0"):
        tokenizer_parameter_groups(net, lr=0.0)


def test_trained_with_deferred_switch_and_validated():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = [{"image": torch.rand(4, 3, 16, 16, generator=g) * 2 - 1} for _ in range(4)]
    net = msvqgan_tiny(scales=(1, 2, 4), num_embeddings=32, embedding_dim=4, quantize=False)
    trainer = TokenizerTrainer("cpu", 2, data, net, torch.optim.Adam(net.parameters(), 1e-3), ReconstructionLoss())
    seen = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.output))
    calls = []
    original = net.quantizer.activate
    net.quantizer.activate = lambda samples, **kw: calls.append(samples) or original(samples, **kw)
    DeferredQuantizationHandler(net, start=3, num_samples=256).attach(trainer)
    trainer.run()
    assert [float(o[TokenizerKeys.QUANTIZE_ACTIVE]) for o in seen] == [0, 0, 0] + [1] * 5
    assert float(seen[0][TokenizerKeys.VQ]) == 0 and float(seen[-1][TokenizerKeys.VQ]) > 0
    # the codebook was born from residuals (rows of the residual pyramid), not from raw latents
    assert len(calls) == 1 and calls[0].shape[1] == 4
    evaluator = TokenizerEvaluator("cpu", data, net)
    CodebookCoverage(net, output_transform=lambda o: o).attach(evaluator, "coverage")
    evaluator.run()
    out = evaluator.state.output
    assert out[TokenizerEvalKeys.INDICES].shape == (4, 1 + 4 + 16)
    assert out[TokenizerEvalKeys.LATENTS].shape == (4 * 21, 4)
    metrics = evaluator.state.metrics
    assert 0 < metrics["usage"] <= 1 and metrics["perplexity"] >= 1 and metrics["shrinkage"] > 0
