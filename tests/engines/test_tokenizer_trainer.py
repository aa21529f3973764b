"""TokenizerTrainer: flat scalar output, discriminator schedule, AMP path, learning, errors."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events

from medvq.engines import TokenizerKeys, TokenizerTrainer
from medvq.losses import ReconstructionLoss, build_discriminator
from medvq.networks import vqgan_tiny


def _data(n=6, batch=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.rand(batch, 3, size, size, generator=g) * 2 - 1} for _ in range(n)]


def _trainer(epochs=1, disc=True, start=2, amp=False, amp_dtype="bfloat16", quantize=True, data=None):
    torch.manual_seed(0)
    net = vqgan_tiny(num_embeddings=32, embedding_dim=4, quantize=quantize)
    d = build_discriminator(2, 3, channels=8, num_layers=2) if disc else None
    d_opt = torch.optim.Adam(d.parameters(), 1e-3) if disc else None
    return TokenizerTrainer(
        "cpu", epochs, data or _data(), net, torch.optim.Adam(net.parameters(), 2e-3), ReconstructionLoss(),
        d, d_opt, discriminator_start=start, amp=amp, amp_dtype=amp_dtype,
    )


def _record(trainer):
    outputs = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(dict(e.state.output)))
    return outputs


def test_output_is_a_flat_dict_of_named_scalars_and_discriminator_starts_late():
    trainer = _trainer(start=2)
    outputs = _record(trainer)
    trainer.run()
    assert len(outputs) == 6
    for out in outputs:
        assert set(out) == set(TokenizerKeys)
        assert all(isinstance(v, torch.Tensor) and v.ndim == 0 and not v.requires_grad for v in out.values())
    # iterations 1-2: no adversarial term; from 3 on the discriminator trains
    assert [float(o[TokenizerKeys.DISCRIMINATOR]) == 0.0 for o in outputs] == [True, True, False, False, False, False]
    assert all(float(o[TokenizerKeys.ADAPTIVE_WEIGHT]) > 0 for o in outputs[2:])
    assert all(float(o[TokenizerKeys.VQ]) > 0 for o in outputs)  # quantize=True: the standard schedule


def test_bf16_autocast_path_runs_and_learns():
    trainer = _trainer(epochs=3, disc=False, amp=True, data=_data(n=4))
    outputs = _record(trainer)
    trainer.run()
    first, last = float(outputs[0][TokenizerKeys.RECONSTRUCTION]), float(outputs[-1][TokenizerKeys.RECONSTRUCTION])
    assert last < first
    assert not trainer.g_scaler.is_enabled()  # bf16 needs no loss scaling


def test_training_lowers_reconstruction_error():
    """A real (tiny) training: continuous phase on fixed images, the L1 error falls well below its start."""
    data = _data(n=2, batch=4)
    trainer = _trainer(epochs=25, disc=False, quantize=False, data=data)
    outputs = _record(trainer)
    trainer.run()
    first = float(outputs[0][TokenizerKeys.L1])
    last = sum(float(o[TokenizerKeys.L1]) for o in outputs[-2:]) / 2
    assert last < 0.7 * first
    assert all(float(o[TokenizerKeys.QUANTIZE_ACTIVE]) == 0.0 for o in outputs)
    assert all(float(o[TokenizerKeys.VQ]) == 0.0 for o in outputs)


def test_constructor_errors():
    net = vqgan_tiny()
    opt = torch.optim.Adam(net.parameters())
    loss = ReconstructionLoss()
    with pytest.raises(ValueError, match="discriminator and d_optimizer must be given together"):
        TokenizerTrainer("cpu", 1, _data(), net, opt, loss, discriminator=build_discriminator(2, 3, 8, 2))
    with pytest.raises(ValueError, match="amp_dtype must be one of"):
        TokenizerTrainer("cpu", 1, _data(), net, opt, loss, amp_dtype="float8")
    with pytest.raises(ValueError, match="discriminator_start must be >= 0"):
        TokenizerTrainer("cpu", 1, _data(), net, opt, loss, discriminator_start=-1)
    with pytest.raises(ValueError, match="grad_clip_norm must be > 0 or None"):
        TokenizerTrainer("cpu", 1, _data(), net, opt, loss, grad_clip_norm=0)


def test_discriminator_call_pattern_follows_taming():
    """taming's VQLPIPSWithDiscriminator: D in train mode on the reconstructions for the generator's term; real and
    fake in two separate calls for D's own loss (BatchNorm never mixes real and fake statistics)."""
    from medvq.losses import discriminator_loss

    trainer = _trainer(start=0, data=_data(n=1))
    d = trainer.discriminator
    calls = []

    def spy(module, args, output):
        calls.append({"training": module.training, "batch": args[0].shape[0], "input": args[0].detach().clone(),
                      "logits": output[-1].detach().clone(), "frozen": not any(p.requires_grad for p in d.parameters())})

    d.register_forward_hook(spy)
    outputs = _record(trainer)
    trainer.run()
    assert len(calls) == 3
    g_call, real_call, fake_call = calls
    images = trainer.data_loader[0]["image"]
    # 1. generator term: train mode, the reconstructions alone, D frozen; g_adv = -mean(D(x_hat)) (hinge)
    assert g_call["training"] and g_call["batch"] == 4 and g_call["frozen"]
    assert float(outputs[0][TokenizerKeys.GENERATOR_ADV]) == pytest.approx(-float(g_call["logits"].mean()), rel=1e-6)
    # 2. discriminator: real images, then the same reconstructions detached, separately and in train mode
    assert real_call["training"] and fake_call["training"] and real_call["batch"] == fake_call["batch"] == 4
    assert torch.equal(real_call["input"], images)
    torch.testing.assert_close(fake_call["input"], g_call["input"])
    expected = discriminator_loss(real_call["logits"], fake_call["logits"])
    assert float(outputs[0][TokenizerKeys.DISCRIMINATOR]) == pytest.approx(float(expected), rel=1e-6)
    assert not real_call["frozen"] and not fake_call["frozen"]
