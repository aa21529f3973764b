"""DeferredQuantizationHandler: fires once at start (iterations or epochs), kmeans_at_start, resume, errors."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events

from medvq.engines import TokenizerKeys, TokenizerTrainer
from medvq.handlers import DeferredQuantizationHandler
from medvq.losses import ReconstructionLoss
from medvq.networks import vqgan_tiny


def _setup(epochs=2, n=4, quantize=False, num_embeddings=32):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = [{"image": torch.rand(4, 3, 16, 16, generator=g) * 2 - 1} for _ in range(n)]
    net = vqgan_tiny(num_embeddings=num_embeddings, embedding_dim=4, quantize=quantize)
    trainer = TokenizerTrainer("cpu", epochs, data, net, torch.optim.Adam(net.parameters(), 1e-3), ReconstructionLoss())
    active = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: active.append(float(e.state.output[TokenizerKeys.QUANTIZE_ACTIVE])))
    return net, trainer, active


def _count_activations(net):
    calls = []
    original = net.quantizer.activate

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    net.quantizer.activate = spy
    return calls


def test_switch_fires_once_at_the_start_iteration():
    net, trainer, active = _setup()
    calls = _count_activations(net)
    DeferredQuantizationHandler(net, start=3, num_samples=256).attach(trainer)
    trainer.run()
    assert len(calls) == 1
    # fired after iteration 3 completed: iterations 1-3 continuous, 4-8 quantized
    assert active == [0, 0, 0, 1, 1, 1, 1, 1]
    info = trainer.state.deferred_switch
    assert info["iteration"] == 3 and info["num_samples"] == 256 and 0 < info["usage"] <= 1


def test_switch_in_epochs():
    net, trainer, active = _setup(epochs=3)
    DeferredQuantizationHandler(net, start=1, unit="epochs", num_samples=128, init="samples").attach(trainer)
    trainer.run()
    assert active == [0] * 4 + [1] * 8
    assert trainer.state.deferred_switch["epoch"] == 1


def test_start_zero_is_kmeans_at_start():
    net, trainer, active = _setup(epochs=1)
    DeferredQuantizationHandler(net, start=0, num_samples=128).attach(trainer)
    trainer.run()
    assert active == [1, 1, 1, 1]
    assert trainer.state.deferred_switch["iteration"] == 0


def test_the_codebook_comes_from_the_current_encoder():
    net, trainer, _ = _setup(epochs=1)
    handler = DeferredQuantizationHandler(net, start=2, num_samples=512)
    handler.attach(trainer)
    trainer.run()
    with torch.no_grad():
        latents = net.encode(trainer.data_loader[0]["image"]).movedim(1, -1).reshape(-1, 4)
    # codes lie among the latents: far closer to them than the random uniform(-1/K, 1/K) init would be
    spread = latents.var(0).sum()
    assert net.quantizer.codebook.var(0).sum() > 0.2 * spread


def test_already_active_quantizer_never_fires_again():
    """A run resumed after the switch (the active flag comes back with the weights) does not re-fire."""
    net, trainer, active = _setup(quantize=True)
    calls = _count_activations(net)
    DeferredQuantizationHandler(net, start=1, num_samples=128).attach(trainer)
    trainer.run()
    assert calls == [] and all(a == 1 for a in active)


def test_start_none_never_switches():
    net, trainer, active = _setup(epochs=1)
    DeferredQuantizationHandler(net, start=None).attach(trainer)
    trainer.run()
    assert active == [0, 0, 0, 0] and not hasattr(trainer.state, "deferred_switch")


def test_too_few_latents_is_a_clear_error():
    net, trainer, _ = _setup(num_embeddings=256)
    DeferredQuantizationHandler(net, start=1, num_samples=64).attach(trainer)
    with pytest.raises(ValueError, match="collected 64 latents but the codebook has 256 codes"):
        trainer.run()


def test_constructor_errors():
    net = vqgan_tiny()
    with pytest.raises(ValueError, match="unit must be one of"):
        DeferredQuantizationHandler(net, start=1, unit="steps")
    with pytest.raises(ValueError, match="start must be an integer >= 0 .* or None"):
        DeferredQuantizationHandler(net, start=-1)
    with pytest.raises(ValueError, match="init must be 'kmeans' or 'samples'"):
        DeferredQuantizationHandler(net, start=1, init="random")
