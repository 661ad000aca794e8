"""Tests for labhelpers.train: schedules, dead latents, resampling, folding, exact resume."""

import json
import math
import os
import signal
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from labhelpers import metrics
from labhelpers.io import load_sae
from labhelpers.sae import ARCHITECTURES, SAEConfig, make_sae
from labhelpers.synthetic import SyntheticSource, make_synthetic
from labhelpers.train import TensorSource, TrainConfig, Trainer, resamples_at, train_sae

pytestmark = pytest.mark.usefixtures("one_thread")


FEATURES = make_synthetic(n_features=32, d_in=8, avg_active=2.0, n_pairs=4, seed=0)


def _setup(name: str, **train_kw):
    sae = make_sae(name, SAEConfig(d_in=8, d_sae=24, k=2, sparsity_coeff=0.5, seed=3))
    cfg = TrainConfig(steps=40, batch_size=32, log_every=5, progress=False, stats_samples=256)
    for key, value in train_kw.items():
        setattr(cfg, key, value)
    return sae, SyntheticSource(FEATURES, seed=1), cfg


def _train_with_planted_deaths(trainer: Trainer, until: int) -> None:
    """Train a fresh trainer to step ``until``. Latents 0-3 are dead from the start (until
    the round at step 10 resamples them) and latents 4-7 from step 12: an encoder bias of
    -100 keeps a latent silent until it is resampled."""
    for latents, stop in ((slice(0, 4), 12), (slice(4, 8), until)):
        with torch.no_grad():
            trainer.sae.b_enc[latents] = -100.0
        trainer.run(until=stop)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_resume_from_checkpoint_is_bit_identical(name, tmp_path, monkeypatch):
    # Rounds at steps 10, 20, 30 and 40; the run is paused at 17, between two of them. So the
    # checkpoint holds an RNG the round at 10 has drawn from, and latents killed at step 12
    # have counted 5 silent steps, to be resampled at 20: resuming must restore both.
    kw = dict(steps=60, dead_window=6, resample_every=10, sparsity_warmup_steps=10)
    sae_a, source_a, cfg = _setup(name, **kw)
    straight = Trainer(sae_a, source_a, cfg)
    rounds = []
    resample = straight.resample_dead
    monkeypatch.setattr(
        straight, "resample_dead", lambda x: rounds.append((straight.step, resample(x)))
    )
    _train_with_planted_deaths(straight, cfg.steps)
    assert rounds[0] == (10, 4) and rounds[1][0] == 20 and rounds[1][1] >= 4

    sae_b, source_b, _ = _setup(name, **kw)
    first = Trainer(sae_b, source_b, cfg)
    _train_with_planted_deaths(first, 17)
    assert (first.steps_since_fired[4:8] == 5).all()
    fresh_rng = torch.Generator().manual_seed(cfg.seed).get_state()
    assert not torch.equal(first.rng.get_state(), fresh_rng)
    first.save_checkpoint(tmp_path / "ckpt")

    sae_c, source_c, _ = _setup(name, **kw)  # fresh objects: nothing shared with `first`
    resumed = Trainer(sae_c, source_c, cfg)
    resumed.load_checkpoint(tmp_path / "ckpt")
    assert resumed.step == 17 and source_c.position == 17
    assert resumed.input_scale == first.input_scale
    assert torch.equal(resumed.rng.get_state(), first.rng.get_state())
    assert torch.equal(resumed.steps_since_fired, first.steps_since_fired)
    saved, restored = first.optimizer.state_dict(), resumed.optimizer.state_dict()
    n_params = len(list(sae_c.parameters()))
    assert saved["state"].keys() == restored["state"].keys() == set(range(n_params))
    for index, state in saved["state"].items():
        for key, value in state.items():
            assert torch.equal(restored["state"][index][key], value), (index, key)
    resumed.run()

    for key, value in sae_a.state_dict().items():
        assert torch.equal(sae_c.state_dict()[key], value), key
    assert torch.equal(resumed.steps_since_fired, straight.steps_since_fired)
    assert dict(resumed.history) == dict(straight.history)
    assert source_c.position == source_a.position == 60
    # The run really moved: a resume that did nothing would not pass the checks above,
    # but make sure the weights left their initial values too.
    assert not torch.equal(sae_a.W_dec, _setup(name)[0].W_dec)


def test_checkpoint_is_only_safetensors_and_json(tmp_path):
    sae, source, cfg = _setup("topk")
    trainer = Trainer(sae, source, cfg)
    trainer.run(until=5)
    trainer.save_checkpoint(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trainer.json", "trainer.safetensors"]


def test_checkpoint_refuses_another_architecture(tmp_path):
    sae, source, cfg = _setup("topk")
    Trainer(sae, source, cfg).save_checkpoint(tmp_path)
    other, source, cfg = _setup("relu")
    with pytest.raises(ValueError, match="TopKSAE"):
        Trainer(other, source, cfg).load_checkpoint(tmp_path)


def _saved_topk_checkpoint(path) -> Trainer:
    """A TopK run (k=2, d_sae=24, 40 steps) paused at step 5, saved in ``path``."""
    sae, source, cfg = _setup("topk")
    trainer = Trainer(sae, source, cfg)
    trainer.run(until=5)
    trainer.save_checkpoint(path)
    return trainer


@pytest.mark.parametrize(
    ("sae_change", "train_change", "message"),
    [
        ({"k": 8}, {}, r"SAEConfig\.k \(checkpoint 2, this trainer 8\)"),
        ({"d_sae": 32}, {}, r"SAEConfig\.d_sae \(checkpoint 24, this trainer 32\)"),
        ({}, {"steps": 400}, r"TrainConfig\.steps \(checkpoint 40, this trainer 400\)"),
        (
            {"k": 8},
            {"lr": 3e-4},
            r"SAEConfig\.k \(checkpoint 2, this trainer 8\); TrainConfig\.lr \(checkpoint 0\.001",
        ),
    ],
    ids=["k", "d_sae", "steps", "several"],
)
def test_checkpoint_refuses_other_settings_and_names_them(
    sae_change, train_change, message, tmp_path
):
    _saved_topk_checkpoint(tmp_path)
    sae, source, cfg = _setup("topk", **train_change)
    sae = make_sae("topk", replace(sae.cfg, **sae_change))
    trainer = Trainer(sae, source, cfg)
    with pytest.raises(ValueError, match=message):
        trainer.load_checkpoint(tmp_path)
    assert trainer.step == 0  # nothing was loaded


def test_checkpoint_may_resume_with_other_progress_logging_and_saving(tmp_path):
    saved = _saved_topk_checkpoint(tmp_path / "ckpt")
    changes = dict(progress=True, log_every=7, checkpoint_dir=str(tmp_path), checkpoint_every=9)
    assert all(getattr(saved.cfg, key) != value for key, value in changes.items())
    resumed = Trainer(*_setup("topk", **changes))
    resumed.load_checkpoint(tmp_path / "ckpt")
    assert resumed.step == 5 and resumed.cfg.log_every == 7
    for key, value in saved.sae.state_dict().items():
        assert torch.equal(resumed.sae.state_dict()[key], value), key


def test_lr_schedule_warms_up_and_decays_to_zero():
    sae, source, cfg = _setup("topk", lr_warmup_steps=10, lr_decay_fraction=0.25)
    trainer = Trainer(sae, source, cfg)
    lrs = [trainer.lr_at(s) for s in range(cfg.steps)]
    assert lrs[0] == pytest.approx(cfg.lr / 10) and lrs[9] == pytest.approx(cfg.lr)
    assert lrs[29] == pytest.approx(cfg.lr) and lrs[-1] < lrs[35] < cfg.lr
    assert trainer.lr_at(cfg.steps) == 0.0
    assert trainer.sparsity_scale_at(0) == pytest.approx(1.0)


def test_sparsity_warmup_ramps():
    sae, source, cfg = _setup("relu", sparsity_warmup_steps=20)
    trainer = Trainer(sae, source, cfg)
    assert trainer.sparsity_scale_at(0) == pytest.approx(1 / 20)
    assert trainer.sparsity_scale_at(19) == pytest.approx(1.0)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_dead_latents_are_tracked_and_resampled(name):
    sae, source, cfg = _setup(name, dead_window=5)
    trainer = Trainer(sae, source, cfg)
    with torch.no_grad():
        sae.b_enc[:6] = -100.0  # these six can never fire
    trainer.run(until=10)
    dead = trainer.dead_mask().clone()
    assert dead[:6].all() and not dead.all()
    with torch.no_grad():  # the dead latents' own parameters away from their start values
        if name == "jumprelu":
            sae.log_threshold[dead] = math.log(5.0)  # raised by the L0 penalty, say
        if name == "gated":
            sae.r_mag[dead], sae.b_mag[dead] = 0.5, -0.5
    x = trainer.scaled(source.next_batch(32))
    sae.eval()  # the reconstruction resampling reads, made the way it makes it
    residual = x - sae(x).x_hat.detach()
    sae.train()
    before = {key: param.detach().clone() for key, param in sae.named_parameters()}
    live_enc_norm = sae.W_enc[:, ~dead].norm(dim=0).mean()
    live_dec_norm = sae.W_dec[~dead].norm(dim=1).mean() if name == "relu" else torch.tensor(1.0)
    # Moments of 1 everywhere: the moments of never-fired latents are 0 already, which
    # would hide a reset that does not happen.
    assert len(trainer.optimizer.state) == len(before)
    for state in trainer.optimizer.state.values():
        state["exp_avg"].fill_(1.0)
        state["exp_avg_sq"].fill_(1.0)

    n_dead = int(dead.sum())
    assert trainer.resample_dead(x) == n_dead
    assert not trainer.dead_mask().any()
    # Decoder rows along the residual of one input each; the encoder reads the same
    # direction, at 0.2 x the mean live encoder norm; the encoder bias is 0.
    dec = sae.W_dec[dead].detach()
    cosines = _unit(dec) @ _unit(residual).T  # [n_dead, batch]
    torch.testing.assert_close(cosines.max(dim=1).values, torch.ones(n_dead))
    torch.testing.assert_close(dec.norm(dim=1), live_dec_norm.expand(n_dead))
    enc = sae.W_enc[:, dead].detach().T
    torch.testing.assert_close(enc.norm(dim=1), (0.2 * live_enc_norm).expand(n_dead))
    torch.testing.assert_close(_unit(enc), _unit(dec))
    assert (sae.b_enc[dead] == 0).all()
    if name == "jumprelu":
        start = torch.full((n_dead,), math.log(sae.cfg.threshold_init))
        torch.testing.assert_close(sae.log_threshold[dead].detach(), start)
    if name == "gated":
        assert (sae.r_mag[dead] == 0).all() and (sae.b_mag[dead] == 0).all()
    # Every per-latent parameter (all but b_dec, which all latents share): the dead
    # latents' Adam moments restart at 0; the live latents keep their moments and weights.
    for key, param in sae.named_parameters():
        moments = trainer.optimizer.state[param]
        if key == "b_dec":
            assert torch.equal(param, before[key]), key
            assert (moments["exp_avg"] == 1).all() and (moments["exp_avg_sq"] == 1).all()
            continue
        for moment in ("exp_avg", "exp_avg_sq"):
            per_latent = _per_latent(key, moments[moment])
            assert (per_latent[dead] == 0).all() and (per_latent[~dead] == 1).all(), (key, moment)
        live = _per_latent(key, param.detach())[~dead]
        assert torch.equal(live, _per_latent(key, before[key])[~dead]), key


def _per_latent(key: str, tensor: torch.Tensor) -> torch.Tensor:
    """A parameter (or its Adam moment) indexed by latent first: W_enc is [d_in, d_sae]."""
    return tensor.T if key == "W_enc" else tensor


def _unit(rows: torch.Tensor) -> torch.Tensor:
    return rows / rows.norm(dim=1, keepdim=True)


def test_resampling_restarts_a_jumprelu_threshold_so_the_latent_can_fire_again():
    sae, source, cfg = _setup("jumprelu", dead_window=5)
    trainer = Trainer(sae, source, cfg)
    with torch.no_grad():
        sae.log_threshold[:6] = torch.tensor(5.0).log()  # raised by the L0 penalty, say
    trainer.run(until=10)
    x = source.next_batch(32) * trainer.input_scale
    assert (sae.encode(x)[:, :6] == 0).all() and trainer.resample_dead(x) >= 6
    start = torch.full((6,), sae.cfg.threshold_init)
    torch.testing.assert_close(sae.threshold[:6].detach(), start)
    assert (sae.encode(x)[:, :6] > 0).any(), "the resampled latents still cannot fire"


def test_resampling_does_not_count_in_the_batchtopk_threshold():
    sae, source, cfg = _setup("batchtopk", dead_window=5)
    trainer = Trainer(sae, source, cfg)
    with torch.no_grad():
        sae.b_enc[:6] = -100.0
    trainer.run(until=10)
    sae.train()  # as during a run
    threshold, updates = sae.threshold.clone(), int(sae.threshold_updates)
    assert trainer.resample_dead(source.next_batch(32) * trainer.input_scale) >= 6
    assert torch.equal(sae.threshold, threshold) and int(sae.threshold_updates) == updates
    assert sae.training  # the pass in eval mode did not leave it there


def test_resampling_stops_one_dead_window_before_the_learning_rate_decays(monkeypatch):
    # 40 steps, decay over the last 20% (from step 32), dead_window 5: rounds at 10, 20 only
    sae, source, cfg = _setup("relu", dead_window=5, resample_every=10)
    trainer = Trainer(sae, source, cfg)
    rounds = []
    monkeypatch.setattr(trainer, "resample_dead", lambda x: rounds.append(trainer.step))
    trainer.run()
    assert rounds == [10, 20]
    assert [s for s in range(41) if resamples_at(cfg, s)] == [10, 20]


def test_training_improves_reconstruction_and_history_is_logged():
    sae, source, cfg = _setup("topk", steps=150)
    trainer = Trainer(sae, source, cfg)
    x = source.sample(512, stream=5)[0] * trainer.input_scale
    fvu_before = metrics.fvu(x, sae(x).x_hat.detach())
    history = trainer.run()
    assert history["step"][-1] == 150 and len(history["fvu"]) == 30
    # Tied initialisation and b_dec at the mean already explain about half the variance.
    assert metrics.fvu(x, sae(x).x_hat.detach()) < 0.8 * fvu_before
    assert all(name in history for name in ("mse", "sparsity", "aux", "l0", "dead_fraction", "lr"))


def test_train_sae_folds_the_normalisation():
    sae, source, cfg = _setup("topk", steps=30)
    trainer = Trainer(sae, source, cfg)
    trainer.run()
    x = source.sample(128, stream=5)[0]
    z_normalised = sae.encode(x * trainer.input_scale)
    assert trainer.input_scale != pytest.approx(1.0)
    trainer.fold_normalization()
    torch.testing.assert_close(sae.encode(x), z_normalised, atol=1e-5, rtol=1e-5)

    sae2, source2, cfg2 = _setup("topk", steps=30)
    train_sae(sae2, source2, cfg2)
    assert torch.equal(sae2.W_enc, sae.W_enc)


def _first_step_gradient(**train_kw) -> torch.Tensor:
    """All of a TopK SAE's gradients after its first step, flattened, as Adam used them."""
    sae, source, cfg = _setup("topk", **train_kw)
    trainer = Trainer(sae, source, cfg)
    trainer.train_step(trainer.scaled(source.next_batch(cfg.batch_size)))
    return torch.cat([param.grad.flatten() for param in sae.parameters()])


def test_grad_clip_none_leaves_the_gradient_unclipped():
    raw, clipped = _first_step_gradient(grad_clip=None), _first_step_gradient(grad_clip=0.01)
    assert raw.norm() > 1.0  # above the default clip, so clipping at 1 would show too
    torch.testing.assert_close(clipped, raw * 0.01 / raw.norm(), rtol=1e-5, atol=1e-8)


def test_without_input_normalisation_the_scale_is_one():
    sae, source, cfg = _setup("topk", normalize_inputs=False)
    trainer = Trainer(sae, source, cfg)
    assert trainer.input_scale == trainer.target_scale == 1.0
    batch = source.next_batch(cfg.batch_size)
    assert torch.equal(trainer.scaled(batch), batch)
    stats = source.sample(cfg.stats_samples)[0]
    torch.testing.assert_close(sae.b_dec.detach(), stats.mean(0))  # the raw mean
    # The same data with normalisation on (the default): another scale, and b_dec scaled too.
    normalised = Trainer(*_setup("topk"))
    assert abs(normalised.input_scale - 1.0) > 0.1  # measured: 1.255
    torch.testing.assert_close(
        normalised.sae.b_dec.detach(), stats.mean(0) * normalised.input_scale
    )


def test_b_dec_stays_at_zero_without_init_b_dec_to_mean():
    sae, source, cfg = _setup("topk", init_b_dec_to_mean=False)
    trainer = Trainer(sae, source, cfg)
    assert (sae.b_dec == 0).all()
    # The default starts at this mean instead (checked above); it is far from 0.
    assert (source.sample(cfg.stats_samples)[0].mean(0) * trainer.input_scale).norm() > 1.0


def test_tensor_source_shuffles_per_epoch_and_resumes():
    data = torch.arange(20.0).unsqueeze(1)
    source = TensorSource(data, seed=0)
    seen = torch.cat([source.next_batch(5) for _ in range(4)]).squeeze(1)
    assert sorted(seen.tolist()) == list(range(20))
    state = source.state_dict()
    following = source.next_batch(5)
    again = TensorSource(data, seed=0)
    again.load_state_dict(state)
    assert torch.equal(again.next_batch(5), following)
    assert state == {"epoch": 0, "index": 20}


def test_export_saves_a_folded_copy_and_training_goes_on(tmp_path):
    sae, source, cfg = _setup("jumprelu", steps=30)
    trainer = Trainer(sae, source, cfg)
    trainer.run(until=15)
    W_enc_before = sae.W_enc.detach().clone()
    trainer.export(tmp_path / "sae", hook_name="synthetic")
    assert torch.equal(sae.W_enc, W_enc_before)  # the trainer's SAE is untouched
    x = source.sample(128, stream=5)[0]
    exported = load_sae(tmp_path / "sae")
    sae.eval()
    torch.testing.assert_close(
        exported.encode(x), sae.encode(x * trainer.input_scale), atol=1e-5, rtol=1e-5
    )
    trainer.run()
    assert trainer.step == 30


class _InterruptAt:
    """Wraps a data source and sends this process Ctrl-C (SIGINT) when batch ``n`` is drawn."""

    def __init__(self, source, n):
        self.source, self.n, self.calls = source, n, 0

    def next_batch(self, batch_size):
        self.calls += 1
        if self.calls == self.n:
            os.kill(os.getpid(), signal.SIGINT)
        return self.source.next_batch(batch_size)

    def __getattr__(self, name):
        return getattr(self.source, name)


def test_ctrl_c_finishes_the_step_saves_and_resumes_exactly(tmp_path):
    sae_a, source_a, cfg = _setup("topk")
    Trainer(sae_a, source_a, cfg).run()

    sae_b, source_b, cfg_b = _setup("topk")
    cfg_b.checkpoint_dir = str(tmp_path / "ckpt")
    with pytest.raises(KeyboardInterrupt):
        Trainer(sae_b, _InterruptAt(source_b, 13), cfg_b).run()
    saved = json.loads((tmp_path / "ckpt" / "trainer.json").read_text())
    assert saved["step"] == 13  # the interrupted step was completed, then saved

    sae_c, source_c, _ = _setup("topk")
    resumed = Trainer(sae_c, source_c, cfg_b)
    resumed.load_checkpoint(tmp_path / "ckpt")
    resumed.run()
    for key, value in sae_a.state_dict().items():
        assert torch.equal(sae_c.state_dict()[key], value), key


def test_periodic_checkpoints(tmp_path):
    sae, source, cfg = _setup("topk")
    cfg.checkpoint_dir, cfg.checkpoint_every = str(tmp_path / "ckpt"), 15
    Trainer(sae, source, cfg).run(until=20)
    assert json.loads((tmp_path / "ckpt" / "trainer.json").read_text())["step"] == 15


class _NaNAt:
    """A data source whose ``n``-th batch is NaN: a broken activation cache, say."""

    def __init__(self, source, n):
        self.source, self.n, self.calls = source, n, 0

    def next_batch(self, batch_size):
        self.calls += 1
        batch = self.source.next_batch(batch_size)
        return torch.full_like(batch, float("nan")) if self.calls == self.n else batch

    def __getattr__(self, name):
        return getattr(self.source, name)


def test_a_nan_batch_stops_training_before_the_step_and_keeps_the_last_checkpoint(tmp_path):
    sae, source, cfg = _setup("topk")
    cfg.checkpoint_dir, cfg.checkpoint_every = str(tmp_path / "ckpt"), 2
    trainer = Trainer(sae, _NaNAt(source, 3), cfg)
    with pytest.raises(FloatingPointError, match="The loss is nan at step 2"):
        trainer.run()  # the third batch is NaN
    assert all(torch.isfinite(p).all() for p in sae.parameters())  # stopped before its step
    resumed = Trainer(*_setup("topk")[:2], cfg)
    resumed.load_checkpoint(tmp_path / "ckpt")
    assert resumed.step == 2


def test_weights_that_are_not_finite_are_never_saved(tmp_path):
    sae, source, cfg = _setup("topk")
    trainer = Trainer(sae, source, cfg)
    trainer.run(until=2)
    trainer.save_checkpoint(tmp_path)
    trainer.run(until=4)
    with torch.no_grad():
        sae.W_dec[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="Not saving step 4"):
        trainer.save_checkpoint(tmp_path)
    resumed = Trainer(*_setup("topk")[:2], cfg)
    resumed.load_checkpoint(tmp_path)
    assert resumed.step == 2


def test_a_nan_loss_names_its_likely_cause():
    sae, source, cfg = _setup("topk")
    with pytest.raises(FloatingPointError, match=r"at step 4\. This batch of inputs holds NaN"):
        Trainer(sae, _NaNAt(source, 5), cfg).run()
    sae, source, cfg = _setup("topk")
    cfg.grad_clip = None
    trainer = Trainer(sae, source, cfg)
    trainer.run(until=3)
    with torch.no_grad():
        sae.W_enc[0, 0] = float("inf")  # what a diverged step leaves behind
    with pytest.raises(FloatingPointError, match=r"finite, so the weights .* or set grad_clip"):
        trainer.run()


def test_nan_in_the_activations_is_caught_before_training():
    data = torch.randn(256, 8)
    data[17, 2] = float("inf")
    sae, _, cfg = _setup("topk")
    with pytest.raises(ValueError, match="hold NaN or inf"):
        Trainer(sae, TensorSource(data), cfg)


def test_a_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    sae, source, cfg = _setup("topk")
    trainer = Trainer(sae, source, cfg)
    trainer.run(until=5)
    trainer.save_checkpoint(tmp_path)
    trainer.run(until=10)

    def killed_while_writing(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\0" * 100)  # part of a file, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr("labhelpers.train.save_file", killed_while_writing)
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint(tmp_path)
    monkeypatch.undo()
    resumed = Trainer(*_setup("topk")[:2], cfg)
    resumed.load_checkpoint(tmp_path)
    assert resumed.step == 5


def test_a_damaged_or_missing_checkpoint_is_named(tmp_path):
    sae, source, cfg = _setup("topk")
    with pytest.raises(FileNotFoundError, match="No checkpoint in"):
        Trainer(sae, source, cfg).load_checkpoint(tmp_path / "nothing-here")
    Trainer(sae, source, cfg).save_checkpoint(tmp_path)
    (tmp_path / "trainer.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"trainer\.safetensors is damaged"):
        Trainer(sae, source, cfg).load_checkpoint(tmp_path)
    save_file({"x": torch.zeros(1)}, str(tmp_path / "trainer.safetensors"))
    with pytest.raises(ValueError, match="holds no trainer state"):
        Trainer(sae, source, cfg).load_checkpoint(tmp_path)


def test_training_works_where_gradients_were_turned_off():
    """A notebook that called torch.set_grad_enabled(False) to read a model can still train."""
    sae, source, cfg = _setup("topk")
    with torch.no_grad():
        history = train_sae(sae, source, cfg)
        assert not torch.is_grad_enabled()  # the caller's setting is left as it was
    assert history["loss"][-1] < history["loss"][0]


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_decoder_rows_stay_unit_norm_where_the_architecture_says(name):
    sae, source, cfg = _setup(name, steps=20, lr=1e-2)  # a large lr moves rows a long way
    Trainer(sae, source, cfg).run()
    norms = sae.W_dec.detach().norm(dim=1)
    if sae.unit_norm_decoder:
        torch.testing.assert_close(norms, torch.ones(sae.cfg.d_sae))
    else:  # ReLU's penalty weighs each row's norm instead: free rows, started at 0.1
        assert name == "relu" and 0.1 < norms.min() and norms.max() < 0.5  # measured 0.14-0.17
