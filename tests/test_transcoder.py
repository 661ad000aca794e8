"""Tests for labhelpers.transcoder and the pieces that carry it: pair harvesting, the
trainer's separate target scale, the splice that replaces an MLP, and the metrics."""

import json

import pytest
import torch

from labhelpers import activations, io, metrics, splice
from labhelpers.sae import SAEConfig
from labhelpers.train import TensorSource, TrainConfig, Trainer
from labhelpers.transcoder import Transcoder, ablation_vs_direct, direct_weights, mlp_hooks

pytestmark = pytest.mark.usefixtures("one_thread")


def _sparse_map(n: int, seed: int = 1) -> torch.Tensor:
    """Pairs ``[n, 2, 8]`` from a known sparse code of 8 features, 1.5 active on average:
    x is the sum of their input directions, y of their (unrelated) output directions,
    10x smaller (an MLP's output is smaller than its input), plus an offset."""
    gen = torch.Generator().manual_seed(0)  # the map is fixed; ``seed`` draws the codes
    read = torch.nn.functional.normalize(torch.randn(8, 8, generator=gen), dim=1)
    write = 0.1 * torch.nn.functional.normalize(torch.randn(8, 8, generator=gen), dim=1)
    gen.manual_seed(seed)
    active = torch.rand(n, 8, generator=gen) < 1.5 / 8
    codes = active * (1 + torch.rand(n, 8, generator=gen))
    return torch.stack([codes @ read, codes @ write + 0.05], dim=1)


def _trainer(data: torch.Tensor, steps: int = 600) -> Trainer:
    transcoder = Transcoder(SAEConfig(d_in=8, d_sae=16, k=3, seed=1))
    cfg = TrainConfig(steps=steps, batch_size=256, lr=5e-3, log_every=50, progress=False)
    return Trainer(transcoder, TensorSource(data, seed=2), cfg)


def test_a_transcoder_learns_a_known_sparse_map_and_folds_both_scales():
    data, held_out = _sparse_map(20_000), _sparse_map(4_000, seed=7)
    trainer = _trainer(data)
    # The targets are 10x smaller than the inputs, so they get their own scale.
    assert trainer.target_scale > 5 * trainer.input_scale
    history = trainer.run()
    assert history["fvu"][-1] < history["fvu"][0] / 5
    scaled = trainer.scaled(held_out)
    z_before = trainer.sae.encode(scaled[:, 0]).detach()
    y_before = trainer.sae.decode(z_before).detach() / trainer.target_scale
    trainer.fold_normalization()
    with torch.no_grad():
        assert torch.allclose(trainer.sae.encode(held_out[:, 0]), z_before, atol=1e-4)
        assert torch.allclose(trainer.sae(held_out).x_hat, y_before, atol=1e-5)
    result = metrics.evaluate(trainer.sae, held_out)
    assert result["fvu"] < 0.05, result  # measured against y, on raw (unscaled) pairs
    assert result["l0"] <= 3


def test_a_transcoder_resumes_exactly_with_its_target_scale(tmp_path):
    data = _sparse_map(4_000)
    straight = _trainer(data, steps=40)
    straight.run()
    first = _trainer(data, steps=40)
    first.run(until=20)
    first.save_checkpoint(tmp_path)
    resumed = _trainer(data, steps=40)
    resumed.target_scale = 1.0  # must come back from the checkpoint
    resumed.load_checkpoint(tmp_path)
    assert resumed.target_scale == straight.target_scale != resumed.input_scale
    resumed.run()
    for key, value in straight.sae.state_dict().items():
        assert torch.equal(resumed.sae.state_dict()[key], value), key


def test_resampling_points_a_dead_latent_at_a_missed_input_and_its_missed_output():
    data = _sparse_map(2_000)
    trainer = _trainer(data)
    batch = trainer.scaled(data[:256])
    trainer.steps_since_fired[:] = 0
    trainer.steps_since_fired[3] = trainer.cfg.dead_window  # latent 3 counts as dead
    with torch.no_grad():
        y_hat = trainer.sae(batch).x_hat
    assert trainer.resample_dead(batch) == 1
    inputs, targets = batch[:, 0], batch[:, 1]
    read = torch.nn.functional.normalize(trainer.sae.W_enc[:, 3], dim=0)
    write = trainer.sae.W_dec[3]
    # Some input of the batch, and the residual of that same input's prediction.
    row = int((torch.nn.functional.normalize(inputs, dim=1) @ read).argmax())
    assert torch.allclose(torch.nn.functional.normalize(inputs[row], dim=0), read, atol=1e-5)
    expected = torch.nn.functional.normalize(targets[row] - y_hat[row], dim=0)
    assert torch.allclose(write, expected, atol=1e-5)


def test_a_saved_transcoder_loads_back_as_the_same_transcoder(tmp_path):
    transcoder = Transcoder(SAEConfig(d_in=8, d_sae=16, k=2, seed=3))
    with torch.no_grad():
        transcoder.b_dec.fill_(0.5)  # would change the latents if subtracted from the input
    path = io.save_sae(transcoder, tmp_path / "tc", hook_name=mlp_hooks(1), model_name="tiny")
    loaded = io.load_sae(path)
    assert type(loaded) is Transcoder and loaded.cfg == transcoder.cfg
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded.encode(x), transcoder.encode(x))
    assert torch.equal(loaded.decode(loaded.encode(x)), transcoder.decode(transcoder.encode(x)))
    cfg = json.loads((path / io.CFG_FILENAME).read_text())
    # SAELens's "transcoder" is a ReLU one: ours must not pass for it.
    assert cfg["architecture"] == "topk_transcoder" and cfg["d_out"] == 8 and cfg["k"] == 2
    assert (cfg["metadata"]["hook_name"], cfg["metadata"]["hook_name_out"]) == mlp_hooks(1)


def test_save_sae_asks_for_both_hooks_of_a_transcoder(tmp_path):
    transcoder = Transcoder(SAEConfig(d_in=8, d_sae=16, k=2))
    with pytest.raises(ValueError, match="hook_name=\\(MLP input, MLP output\\)"):
        io.save_sae(transcoder, tmp_path / "tc", hook_name="blocks.1.hook_mlp_out")
    assert not (tmp_path / "tc").exists()


def test_save_sae_names_what_it_cannot_write(tmp_path):
    class Custom(Transcoder):
        pass

    with pytest.raises(TypeError, match="Custom is not one of them"):
        io.save_sae(Custom(SAEConfig(d_in=8, d_sae=16, k=2)), tmp_path / "custom")


def test_a_transcoder_never_subtracts_b_dec_from_its_input():
    transcoder = Transcoder(SAEConfig(d_in=8, d_sae=16, k=2, apply_b_dec_to_input=True))
    assert transcoder.cfg.apply_b_dec_to_input is False


def test_a_transcoder_rejects_a_batch_that_is_not_pairs():
    transcoder = Transcoder(SAEConfig(d_in=8, d_sae=16, k=2))
    with pytest.raises(ValueError, match=r"\[batch, 2, d_model\]"):
        transcoder(torch.zeros(4, 8))
    with pytest.raises(ValueError, match="width d_in=8"):
        transcoder(torch.zeros(4, 2, 6))


def test_harvesting_a_pair_of_hooks_stacks_what_each_hook_gives(tiny_model):
    texts = list(activations.corpus_texts("val", 20, seed=1))
    hooks = mlp_hooks(1)
    pairs = activations.collect(tiny_model, hooks, texts, 300, 32, progress=False)
    assert pairs.shape == (300, 2, tiny_model.cfg.d_model)
    for slot, hook in enumerate(hooks):
        alone = activations.collect(tiny_model, hook, texts, 300, 32, progress=False)
        assert torch.allclose(pairs[:, slot], alone, atol=1e-6), hook
    # The MLP's input is LayerNorm 2's output and its output is what the block adds.
    assert not torch.allclose(pairs[:, 0], pairs[:, 1])


def test_the_splice_replaces_the_mlp_output_with_the_prediction_from_its_input(
    tiny_model, random_tokens
):
    tokens = random_tokens(2, 12)
    in_hook, out_hook = mlp_hooks(2)
    transcoder = Transcoder(SAEConfig(d_in=tiny_model.cfg.d_model, d_sae=64, k=4, seed=5))
    with torch.no_grad():
        transcoder.b_enc.fill_(0.1)  # some latents fire
        _, cache = tiny_model.run_with_cache(tokens, names_filter=[in_hook, out_hook])
        expected = cache[out_hook].clone()
        expected[:, 1:] = transcoder.decode(transcoder.encode(cache[in_hook][:, 1:]))
        spliced = tiny_model.run_with_hooks(
            tokens, fwd_hooks=splice.transcoder_hooks(transcoder, in_hook, out_hook)
        )
        by_hand = splice.logits_with(tiny_model, tokens, out_hook, lambda act, hook: expected)
    assert torch.allclose(spliced, by_hand, atol=1e-5)
    assert not torch.allclose(spliced, splice.logits_with(tiny_model, tokens, out_hook, None))


def test_ce_loss_recovered_for_a_transcoder_that_predicts_nothing_is_zero(tiny_model):
    tokens = activations.token_rows(
        activations.corpus_texts("val", 40, seed=2), tiny_model.tokenizer, 32, 4
    )
    blank = Transcoder(SAEConfig(d_in=tiny_model.cfg.d_model, d_sae=32, k=4))
    with torch.no_grad():
        blank.W_dec.zero_()  # b_dec is zero too: the MLP's output becomes zero
    result = metrics.ce_loss_recovered(tiny_model, blank, mlp_hooks(0), tokens, batch_size=2)
    assert abs(result["recovered"]) < 1e-4
    assert result["loss_zero"] > result["loss_clean"] + 0.5  # block 0's MLP matters


def test_direct_weights_ignore_what_layernorm_centres_away():
    gen = torch.Generator().manual_seed(0)
    transcoder = Transcoder(SAEConfig(d_in=8, d_sae=16, k=2))
    W_dec_up, ln_weight = torch.randn(5, 8, generator=gen), torch.rand(8, generator=gen) + 0.5
    weights = direct_weights(W_dec_up, transcoder, ln_weight)
    assert weights.shape == (5, 16)
    shifted = direct_weights(W_dec_up + 3.0, transcoder, ln_weight)  # the same in every d_model
    assert torch.allclose(weights, shifted, atol=1e-5)
    assert not torch.allclose(weights, W_dec_up @ transcoder.W_enc, atol=1e-3)


def _random_pair(tiny_model):
    from labhelpers.sae import TopKSAE

    d_model = tiny_model.cfg.d_model
    sae = TopKSAE(SAEConfig(d_in=d_model, d_sae=64, k=8, seed=2))
    transcoder = Transcoder(SAEConfig(d_in=d_model, d_sae=64, k=8, seed=3))
    return sae, transcoder


def test_with_attention_and_layernorm_held_the_direct_weights_are_the_whole_effect(
    tiny_model, random_tokens
):
    sae, transcoder = _random_pair(tiny_model)
    tokens, held = random_tokens(2, 16), ["blocks.1.hook_attn_out", "blocks.1.ln2.hook_scale"]
    real, predicted = ablation_vs_direct(
        tiny_model, sae, "blocks.1.hook_resid_pre", transcoder, 1, tokens, [0, 5, 9], held
    )
    assert len(real) > 50 and real.abs().max() > 0.1
    assert torch.allclose(real, predicted, atol=1e-4)
    # Let them respond and the same ablations do more than the fixed weights say.
    free, predicted_free = ablation_vs_direct(
        tiny_model, sae, "blocks.1.hook_resid_pre", transcoder, 1, tokens, [0, 5, 9]
    )
    assert torch.equal(predicted_free, predicted)
    assert (free - predicted).abs().max() > 100 * 1e-4  # far outside the held case's tolerance


def test_the_full_profiles_streamed_pairs_train_a_transcoder(tiny_model):
    """The full profile streams its pairs through a shuffling buffer; same code, tiny model."""

    def texts():
        return activations.corpus_texts("train", 200, seed=4)

    source = activations.training_source(
        tiny_model,
        mlp_hooks(1),
        texts,
        2_000,
        64,
        context=32,
        in_memory=False,
        buffer_size=512,
        harvest_batch=4,
    )
    try:
        assert source.sample(100)[0].shape == (100, 2, tiny_model.cfg.d_model)
        transcoder = Transcoder(SAEConfig(d_in=tiny_model.cfg.d_model, d_sae=64, k=4))
        cfg = TrainConfig(steps=6, batch_size=64, log_every=3, progress=False, stats_samples=100)
        trainer = Trainer(transcoder, source, cfg)
        history = trainer.run()
    finally:
        source.close()
    assert source.batches == 6 and len(history["fvu"]) == 2
    assert trainer.target_scale > 2 * trainer.input_scale  # the MLP's output is the smaller
