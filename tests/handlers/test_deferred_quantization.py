"""DeferredQuantizationHandler: fires once at start (iterations or epochs), kmeans_at_start, resume, errors."""

from __future__ import annotations

import math

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
    with pytest.raises(ValueError, match="start must be an integer >= 0 .*, 'auto' or None"):
        DeferredQuantizationHandler(net, start=-1)
    with pytest.raises(ValueError, match="init must be 'kmeans' or 'samples'"):
        DeferredQuantizationHandler(net, start=1, init="random")
    with pytest.raises(ValueError, match="auto_patience must be an integer >= 1"):
        DeferredQuantizationHandler(net, start="auto", auto_patience=0)
    with pytest.raises(ValueError, match="auto_max must be None or an integer >= auto_min"):
        DeferredQuantizationHandler(net, start="auto", auto_min=5, auto_max=3)
    with pytest.raises(ValueError, match="auto_tolerance must be in"):
        DeferredQuantizationHandler(net, start="auto", auto_tolerance=1.5)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"start": 8}, r"start=8 \(iterations\) is never reached .* the run has 8 iterations \(2 epochs of 4\)"),
    ({"start": 100}, r"start=100 \(iterations\) is never reached"),
    ({"start": 2, "unit": "epochs"}, r"start=2 \(epochs\) is never reached .* the run has 2 epochs"),
    ({"start": "auto", "auto_min": 8}, r"auto_min=8 \(iterations\) cannot switch before training ends"),
    ({"start": "auto", "auto_max": 8}, r"auto_max=8 \(iterations\) is not within the run"),
])
def test_a_switch_that_leaves_no_quantized_training_is_an_error_at_attach(kwargs, message):
    """The switch fires at the end of iteration/epoch ``start``: at the end of the last one nothing is left to train
    quantized, so that is refused when the handler is attached to a trainer (which knows its run's length)."""
    net, trainer, _ = _setup(epochs=2, n=4)  # 8 iterations
    with pytest.raises(ValueError, match=message):
        DeferredQuantizationHandler(net, num_samples=128, **kwargs).attach(trainer)
    for fine in ({"start": 7}, {"start": 1, "unit": "epochs"}, {"start": 0}, {"start": None},
                 {"start": "auto", "auto_min": 7, "auto_max": 7}):
        DeferredQuantizationHandler(net, num_samples=128, **fine).attach(trainer)


def test_a_plain_engine_is_checked_when_its_run_starts():
    from ignite.engine import Engine

    net = vqgan_tiny(num_embeddings=16, embedding_dim=4, quantize=False)
    data = [{"image": torch.rand(4, 3, 16, 16) * 2 - 1}] * 2
    steps = []
    engine = Engine(lambda e, b: steps.append(1))
    DeferredQuantizationHandler(net, start=2, num_samples=64, data_loader=data).attach(engine)  # length unknown yet
    with pytest.raises(ValueError, match=r"start=2 \(iterations\) is never reached"):
        engine.run(data, max_epochs=1)
    assert steps == []  # refused before the first iteration


def test_a_run_that_ends_without_the_switch_warns(caplog):
    net, trainer, active = _setup(epochs=1)
    DeferredQuantizationHandler(net, start="auto", auto_patience=100, num_samples=128).attach(trainer)
    with caplog.at_level("WARNING"):
        trainer.run()
    assert active == [0, 0, 0, 0] and "without the switch" in caplog.text and "never quantized" in caplog.text


# ---------------------------------------------------------------------------------------- fresh optimizer state
def _plain_engine(net, optimizer, x, record):
    """A plain Ignite engine (no ``optimizer`` attribute) training ``net`` on ``x``; ``record`` gets the codebook's
    gradient and update of every step."""
    from ignite.engine import Engine

    def step(engine, batch):
        optimizer.zero_grad()
        out = net(batch["image"], return_output=True)
        loss = (out.reconstruction - batch["image"]).abs().mean() + out.quantizer.loss
        loss.backward()
        weight = net.quantizer.weight
        before, grad = weight.detach().clone(), weight.grad.detach().clone()
        optimizer.step()
        record.append((grad, weight.detach() - before))
        return loss.detach()

    return Engine(step)


@pytest.mark.parametrize("betas", [(0.5, 0.9), (0.9, 0.999)])
def test_first_update_after_the_switch_is_a_fresh_optimizers(betas):
    torch.manual_seed(0)
    net = vqgan_tiny(num_embeddings=32, embedding_dim=4, quantize=False)
    lr, eps = 1e-3, 1e-8
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, betas=betas, eps=eps)
    g = torch.Generator().manual_seed(0)
    data = [{"image": torch.rand(4, 3, 16, 16, generator=g) * 2 - 1} for _ in range(6)]
    record = []
    engine = _plain_engine(net, optimizer, data, record)
    handler = DeferredQuantizationHandler(net, start=3, num_samples=256, data_loader=data, optimizer=optimizer)
    handler.attach(engine)
    engine.run(data, max_epochs=1)
    # before the switch the codebook got gradients of exactly 0 (not None): Adam counted those steps
    assert all(float(grad.abs().max()) == 0.0 for grad, _ in record[:3])
    assert engine.state.deferred_switch["reset_parameters"] == 1
    # a fresh Adam's first step is -lr * m_hat / (sqrt(v_hat) + eps) with m_hat = g, v_hat = g^2
    grad, update = record[3]
    fresh = -lr * grad / (grad.abs() + eps)
    torch.testing.assert_close(update, fresh, rtol=1e-4, atol=1e-7)  # float32 rounding at |w| ~ 1; stale: ~2e-4 off


@pytest.mark.parametrize("betas,zero_steps", [((0.5, 0.9), 100), ((0.9, 0.999), 1000)])
def test_without_the_reset_the_first_update_would_be_larger(betas, zero_steps):
    """The defect the reset fixes, measured: after t - 1 zero-gradient steps Adam's first real step is
    ``[(1 - b1) / (1 - b1^t)] / sqrt[(1 - b2) / (1 - b2^t)]`` times a fresh Adam's (1.58x and 2.51x here)."""
    b1, b2 = betas
    p = torch.nn.Parameter(torch.zeros(5))
    stale = torch.optim.Adam([p], lr=1e-3, betas=betas, eps=1e-12)
    for _ in range(zero_steps):
        p.grad = torch.zeros(5)
        stale.step()
    p.grad = torch.linspace(0.1, 1.0, 5)
    before = p.detach().clone()
    stale.step()
    t = zero_steps + 1
    expected = ((1 - b1) / (1 - b1**t)) / math.sqrt((1 - b2) / (1 - b2**t))
    ratio = (p.detach() - before).abs() / 1e-3
    torch.testing.assert_close(ratio, torch.full((5,), expected), rtol=1e-4, atol=0)
    assert expected > 1.5


def test_trainer_optimizer_is_reset_by_default():
    net, trainer, _ = _setup()
    DeferredQuantizationHandler(net, start=3, num_samples=256).attach(trainer)
    states = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=4),
                              lambda e: states.append(int(e.optimizer.state[net.quantizer.weight]["step"])))
    trainer.run()
    assert trainer.state.deferred_switch["reset_parameters"] == 1
    assert states == [1]  # one step since the switch, not four


def test_plain_engine_without_optimizer_warns(caplog):
    from ignite.engine import Engine

    torch.manual_seed(0)
    net = vqgan_tiny(num_embeddings=16, embedding_dim=4, quantize=False)
    data = [{"image": torch.rand(4, 3, 16, 16) * 2 - 1}]
    engine = Engine(lambda e, b: None)
    DeferredQuantizationHandler(net, start=1, num_samples=64, data_loader=data).attach(engine)
    with caplog.at_level("WARNING"):
        engine.run(data * 2, max_epochs=1)  # a switch after iteration 1 of 2 (one at the last iteration is an error)
    assert "no optimizer to reset (pass optimizer=" in caplog.text
    assert engine.state.deferred_switch["reset_parameters"] == 0


# ---------------------------------------------------------------------------------------- AMP
def test_latents_are_collected_as_bf16_training_sees_them():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = [{"image": torch.rand(4, 3, 16, 16, generator=g) * 2 - 1} for _ in range(2)]
    net = vqgan_tiny(num_embeddings=16, embedding_dim=4, quantize=False)
    trainer = TokenizerTrainer("cpu", 1, data, net, torch.optim.Adam(net.parameters(), 1e-3), ReconstructionLoss(),
                               amp=True)
    handler = DeferredQuantizationHandler(net, start=1, num_samples=64, init="samples")
    trainer.state.device = None
    samples = handler.collect_latents(trainer)
    # quant_conv under bf16 autocast returns bf16: every collected value is exactly a bf16 number
    assert torch.equal(samples, samples.bfloat16().float())
    with torch.no_grad():
        fp32 = net.encode(data[0]["image"])
    assert not torch.equal(fp32, fp32.bfloat16().float())  # an fp32 collection would not be


# ---------------------------------------------------------------------------------------- auto switch
def _auto_run(tmp_path, dims, **kwargs):
    from torch.utils.tensorboard import SummaryWriter

    net, trainer, active = _setup(epochs=3)  # 12 iterations
    writer = SummaryWriter(str(tmp_path / "tb"))
    handler = DeferredQuantizationHandler(net, start="auto", num_samples=256, summary_writer=writer,
                                          run_info_dir=str(tmp_path), **kwargs)
    values = iter(dims)
    handler.latent_effective_dimension = lambda engine: next(values)
    handler.attach(trainer)
    trainer.run()
    writer.close()
    return handler, trainer, active


def test_auto_switches_once_the_effective_dimension_stops_growing(tmp_path):
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # growth, growth, then +1% twice (below the 2% tolerance): patience 2 is reached at the 5th check
    dims = [2.0, 2.5, 3.0, 3.03, 3.05] + [3.1] * 10
    handler, trainer, active = _auto_run(tmp_path, dims, auto_every=2, auto_patience=2, auto_tolerance=0.02)
    assert trainer.state.deferred_switch["iteration"] == 10 and trainer.state.deferred_switch["rule"] == "auto"
    assert active == [0] * 10 + [1] * 2
    curve = trainer.state.deferred_switch["auto"]["curve"]
    assert [c["iteration"] for c in curve] == [2, 4, 6, 8, 10]
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["switch"]["iteration"] == 10 and len(info["switch"]["auto"]["curve"]) == 5
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("switch/latent_effective_dim")] == pytest.approx(dims[:5])
    assert [e.step for e in acc.Scalars("switch/iteration")] == [10]


def test_auto_switches_at_auto_max_and_not_before_auto_min(tmp_path):
    handler, trainer, _ = _auto_run(tmp_path, [float(i) for i in range(1, 20)], auto_max=5)  # always growing
    assert trainer.state.deferred_switch["iteration"] == 5
    _, trainer, _ = _auto_run(tmp_path / "b", [3.0] * 20, auto_min=7, auto_patience=1)  # flat from the start
    assert trainer.state.deferred_switch["iteration"] == 7


def test_latent_effective_dimension_of_the_probe_is_measured_for_real():
    net, trainer, _ = _setup(epochs=1)
    handler = DeferredQuantizationHandler(net, start="auto", auto_probe_images=6)
    dim = handler.latent_effective_dimension(trainer)
    assert handler._probe.shape[0] == 6 and 1.0 <= dim <= 4.0  # embedding_dim 4
    assert handler.latent_effective_dimension(trainer) == pytest.approx(dim)  # the same probe every time


def test_post_switch_warmup_scales_the_learning_rate_then_restores_it():
    from ignite.engine import Engine

    torch.manual_seed(0)
    net = vqgan_tiny(num_embeddings=16, embedding_dim=4, quantize=False)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)  # a scheduler underneath
    data = [{"image": torch.rand(2, 3, 16, 16) * 2 - 1}]
    factors = []

    def step(engine, batch):
        optimizer.zero_grad()
        net.quant_conv.conv.bias.sum().backward()  # gradient 1 for this bias, 0 elsewhere
        before = net.quant_conv.conv.bias.detach().clone()
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        factors.append(round(float((before - net.quant_conv.conv.bias.detach())[0]) / lr, 6))
        scheduler.step()

    engine = Engine(step)
    DeferredQuantizationHandler(net, start=2, num_samples=64, data_loader=data, optimizer=optimizer,
                                warmup_iterations=4).attach(engine)
    engine.run(data * 8, max_epochs=1)
    # steps 1-2 before the switch at full rate, then 1/4, 2/4, 3/4, 4/4 of the scheduler's rate, then full again
    assert factors == pytest.approx([1.0, 1.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0], abs=1e-5)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**8)  # the scheduler's chain is intact


def _freeze_engine(net, optimizer, moved):
    from ignite.engine import Engine

    encoder_side = [p for name in ("encoder", "quant_conv", "quantizer") for p in getattr(net, name).parameters()]
    decoder_side = list(net.decoder.parameters())

    def step(engine, batch):
        optimizer.zero_grad()
        net(batch["image"]).square().mean().backward()
        before_enc = [p.detach().clone() for p in encoder_side]
        before_dec = [p.detach().clone() for p in decoder_side]
        optimizer.step()
        moved.append((any(not torch.equal(a, p) for a, p in zip(before_enc, encoder_side)),
                      any(not torch.equal(a, p) for a, p in zip(before_dec, decoder_side))))

    return Engine(step)


def test_post_switch_encoder_freeze_leaves_the_encoder_side_unchanged_then_releases_it():
    """freeze_encoder_iterations: for N optimizer steps after the switch the encoder, quant_conv and quantizer do
    not move (and Adam keeps no moments for them), while the decoder trains; afterwards all train again."""
    data = [{"image": torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1}]
    for freeze, expected in ((3, [(True, True)] * 2 + [(False, True)] * 3 + [(True, True)] * 2),
                             (-1, [(True, True)] * 2 + [(False, True)] * 5)):  # -1: frozen until the run ends
        torch.manual_seed(0)
        net = vqgan_tiny(num_embeddings=16, embedding_dim=4, quantize=False)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        moved = []
        engine = _freeze_engine(net, optimizer, moved)
        DeferredQuantizationHandler(net, start=2, num_samples=64, data_loader=data, optimizer=optimizer,
                                    freeze_encoder_iterations=freeze).attach(engine)
        engine.run(data * 7, max_epochs=1)
        # steps 1-2 before the switch: all train; the switch fires after step 2; then frozen (and released)
        assert moved == expected, freeze
    with pytest.raises(ValueError, match="freeze_encoder_iterations must be an integer >= -1"):
        DeferredQuantizationHandler(net, start=2, freeze_encoder_iterations=-2)


@pytest.mark.parametrize("freeze, run_info, expected_after_resume, warns", [
    (4, True, [(False, True)] * 2 + [(True, True)] * 2, False),  # 2 of 4 frozen steps before the kill, 2 after
    (-1, False, [(False, True)] * 4, False),  # -1 needs no switch iteration
    (4, False, [(True, True)] * 4, True),  # no run_info.json: the count cannot be resumed, and it says so
])
def test_a_run_resumed_after_the_switch_freezes_for_the_steps_that_are_left(tmp_path, caplog, freeze, run_info,
                                                                             expected_after_resume, warns):
    """Killed 2 steps after the switch at iteration 2 and resumed from its weights, optimizer and engine state (as
    ResumeFromCheckpoint restores them), the encoder stays frozen for exactly the steps of the freeze that are left."""
    torch.manual_seed(0)
    data = [{"image": torch.rand(2, 3, 16, 16) * 2 - 1}] * 2
    net = vqgan_tiny(num_embeddings=16, embedding_dim=4, quantize=False)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    moved = []
    kwargs = {"start": 2, "num_samples": 64, "data_loader": data, "freeze_encoder_iterations": freeze,
              "run_info_dir": str(tmp_path) if run_info else None}
    first = _freeze_engine(net, optimizer, moved)
    DeferredQuantizationHandler(net, optimizer=optimizer, **kwargs).attach(first)
    first.run(data, max_epochs=2)  # iterations 1-4: the switch after 2, then 2 frozen steps
    assert moved == [(True, True)] * 2 + [(False, True)] * 2
    saved = {"net": net.state_dict(), "optimizer": optimizer.state_dict(), "engine": first.state_dict()}

    torch.manual_seed(1)
    resumed_net = vqgan_tiny(num_embeddings=16, embedding_dim=4, quantize=False)
    resumed_net.load_state_dict(saved["net"])  # brings the quantizer's active flag: the switch does not fire again
    resumed_optimizer = torch.optim.Adam(resumed_net.parameters(), lr=1e-3)
    resumed_optimizer.load_state_dict(saved["optimizer"])
    moved.clear()
    second = _freeze_engine(resumed_net, resumed_optimizer, moved)
    second.load_state_dict(saved["engine"])
    calls = _count_activations(resumed_net)
    DeferredQuantizationHandler(resumed_net, optimizer=resumed_optimizer, **kwargs).attach(second)
    with caplog.at_level("WARNING", logger="medvq.handlers.deferred_quantization"):
        second.run(data, max_epochs=4)  # iterations 5-8
    assert calls == []
    assert moved == expected_after_resume
    assert ("post-switch encoder freeze is not resumed" in caplog.text) == warns


def test_a_run_resumed_inside_the_post_switch_warmup_continues_it(tmp_path):
    from ignite.engine import Engine

    torch.manual_seed(0)
    data = [{"image": torch.rand(2, 3, 16, 16) * 2 - 1}] * 2
    factors = []

    def run(net, optimizer, engine_state, max_epochs):
        def step(engine, batch):
            optimizer.zero_grad()
            net.quant_conv.conv.bias.sum().backward()  # gradient 1 for this bias
            before = net.quant_conv.conv.bias.detach().clone()
            optimizer.step()
            factors.append(round(float((before - net.quant_conv.conv.bias.detach())[0]) / 0.1, 6))

        engine = Engine(step)
        if engine_state is not None:
            engine.load_state_dict(engine_state)
        DeferredQuantizationHandler(net, start=2, num_samples=64, data_loader=data, optimizer=optimizer,
                                    warmup_iterations=4, run_info_dir=str(tmp_path)).attach(engine)
        engine.run(data, max_epochs=max_epochs)
        return engine

    net = vqgan_tiny(num_embeddings=16, embedding_dim=4, quantize=False)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    state = run(net, optimizer, None, 2).state_dict()  # the switch after 2, then 1/4, 2/4
    resumed = vqgan_tiny(num_embeddings=16, embedding_dim=4, quantize=False)
    resumed.load_state_dict(net.state_dict())
    run(resumed, torch.optim.SGD(resumed.parameters(), lr=0.1), state, 4)  # 3/4, 4/4, then full rate
    assert factors == pytest.approx([1.0, 1.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0], abs=1e-5)


def test_kmeans_at_start_never_freezes_its_untrained_encoder(caplog):
    """start=0 fires before any training: a freeze there would keep the encoder untrained, so it is not applied
    (and the switch record says so)."""

    torch.manual_seed(0)
    data = [{"image": torch.rand(2, 3, 16, 16) * 2 - 1}] * 3
    net = vqgan_tiny(num_embeddings=16, embedding_dim=4, quantize=False)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    moved = []
    engine = _freeze_engine(net, optimizer, moved)
    handler = DeferredQuantizationHandler(net, start=0, num_samples=64, data_loader=data, optimizer=optimizer,
                                          freeze_encoder_iterations=-1)
    handler.attach(engine)
    with caplog.at_level("INFO", logger="medvq.handlers.deferred_quantization"):
        engine.run(data, max_epochs=1)
    assert moved == [(True, True)] * 3
    assert handler.effective_freeze_iterations == 0 and engine.state.deferred_switch["freeze_encoder_iterations"] == 0
    assert "the encoder is not frozen" in caplog.text
