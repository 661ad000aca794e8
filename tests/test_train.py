"""Tests for labhelpers.train: schedules, dead latents, resampling, folding, exact resume."""

import json
import os
import signal

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


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_resume_from_checkpoint_is_bit_identical(name, tmp_path):
    kw = dict(dead_window=3, resample_every=10, sparsity_warmup_steps=10)
    sae_a, source_a, cfg = _setup(name, **kw)
    straight = Trainer(sae_a, source_a, cfg)
    straight.run()

    sae_b, source_b, _ = _setup(name, **kw)
    first = Trainer(sae_b, source_b, cfg)
    first.run(until=20)
    first.save_checkpoint(tmp_path / "ckpt")

    sae_c, source_c, _ = _setup(name, **kw)  # fresh objects: nothing shared with `first`
    resumed = Trainer(sae_c, source_c, cfg)
    resumed.load_checkpoint(tmp_path / "ckpt")
    assert resumed.step == 20
    resumed.run()

    for key, value in sae_a.state_dict().items():
        assert torch.equal(sae_c.state_dict()[key], value), key
    assert torch.equal(resumed.steps_since_fired, straight.steps_since_fired)
    assert dict(resumed.history) == dict(straight.history)
    assert source_c.position == source_a.position == 40
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


def test_dead_latents_are_tracked_and_resampled():
    sae, source, cfg = _setup("relu", dead_window=5)
    trainer = Trainer(sae, source, cfg)
    with torch.no_grad():
        sae.b_enc[:6] = -100.0  # these six can never fire
    trainer.run(until=10)
    assert trainer.dead_mask()[:6].all()
    x = source.next_batch(32) * trainer.input_scale
    n_dead = int(trainer.dead_mask().sum())
    assert n_dead >= 6 and trainer.resample_dead(x) == n_dead
    assert not trainer.dead_mask()[:6].any()
    assert (sae.b_enc[:6] == 0).all()


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
