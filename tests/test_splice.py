"""Splicing an SAE into the tiny model: identities that must hold exactly."""

import pytest
import torch

from labhelpers import circuits, metrics, splice, steering
from labhelpers.sae import SAEConfig, TopKSAE
from labhelpers.transcoder import Transcoder

HOOK = "blocks.1.hook_resid_pre"


@pytest.fixture(scope="module")
def setup(tiny_model, random_tokens):
    tokens = random_tokens(2, 12)
    sae = TopKSAE(SAEConfig(d_in=tiny_model.cfg.d_model, d_sae=4 * tiny_model.cfg.d_model, k=8))
    return tokens, sae


def test_keeping_the_error_with_no_edit_reproduces_the_clean_logits(tiny_model, setup):
    tokens, sae = setup
    clean = splice.logits_with(tiny_model, tokens, HOOK, None)
    kept = splice.logits_with(tiny_model, tokens, HOOK, splice.sae_hook(sae, keep_error=True))
    torch.testing.assert_close(kept, clean, atol=1e-4, rtol=1e-4)


def test_the_bare_reconstruction_changes_the_output_but_not_bos(tiny_model, setup):
    tokens, sae = setup
    clean = splice.logits_with(tiny_model, tokens, HOOK, None)
    spliced = splice.logits_with(tiny_model, tokens, HOOK, splice.sae_hook(sae))
    torch.testing.assert_close(spliced[:, 0], clean[:, 0])  # BOS passes through untouched
    assert not torch.allclose(spliced[:, 1:], clean[:, 1:], atol=1e-3)
    assert splice.kl_divergence(clean, spliced) > 0
    assert splice.kl_divergence(clean, clean).abs() < 1e-6


def test_an_edit_changes_only_through_the_edited_latents(tiny_model, setup):
    _, sae = setup
    seen = {}

    def edit(z):
        seen["shape"] = tuple(z.shape)
        return z * 0.0

    hook = splice.sae_hook(sae, edit=edit, keep_error=True)
    x = torch.randn(2, 12, tiny_model.cfg.d_model)
    out = hook(x)
    assert seen["shape"] == (2, 11, sae.cfg.d_sae)
    # zeroing every latent leaves b_dec plus the error: x - x_hat + b_dec
    x_hat = sae.decode(sae.encode(x[:, 1:]))
    torch.testing.assert_close(out[:, 1:], x[:, 1:] - x_hat + sae.b_dec, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, 0], x[:, 0])


def test_zero_hook_and_next_token_loss():
    x = torch.ones(1, 3, 4)
    assert splice.zero_hook(x)[:, 1:].abs().sum() == 0 and splice.zero_hook(x)[0, 0].sum() == 4
    logits = torch.full((1, 3, 5), -1e4)
    tokens = torch.tensor([[0, 2, 4]])
    logits[0, 0, 2] = logits[0, 1, 4] = 0.0  # certain and right
    assert splice.next_token_loss(logits, tokens) < 1e-6


def test_reads_from_names_what_an_sae_and_a_transcoder_encode():
    sae = TopKSAE(SAEConfig(d_in=8, d_sae=16, k=2))
    tc = Transcoder(SAEConfig(d_in=8, d_sae=16, k=2))
    assert splice.reads_from(HOOK, sae) == HOOK
    assert splice.reads_from("blocks.3.hook_mlp_out", tc) == "blocks.3.mlp.hook_in"
    with pytest.raises(ValueError, match="hook_mlp_out"):
        splice.reads_from(HOOK, tc)


def test_sae_hook_refuses_a_transcoder_and_points_to_its_hooks():
    tc = Transcoder(SAEConfig(d_in=8, d_sae=16, k=2))
    with pytest.raises(ValueError, match="transcoder_hooks"):
        splice.sae_hook(tc)


def test_replacing_hooks_hand_the_replacement_the_right_tensors(tiny_model, random_tokens):
    """For an SAE, x is the activation itself; for a transcoder, the MLP's input of the same
    pass. A replacement that returns y leaves the logits as they were."""
    tokens = random_tokens(2, 6)
    d = tiny_model.cfg.d_model
    _, cache = tiny_model.run_with_cache(tokens)
    seen = {}

    def keep(x, y):
        seen["x"], seen["y"] = x, y
        return y

    clean = tiny_model(tokens)
    tc = Transcoder(SAEConfig(d_in=d, d_sae=16, k=2))
    for name, sae, reads in (
        (HOOK, TopKSAE(SAEConfig(d_in=d, d_sae=16, k=2)), HOOK),
        ("blocks.1.hook_mlp_out", tc, "blocks.1.mlp.hook_in"),
    ):
        hooks = splice.replacing_hooks(name, sae, keep)
        logits = tiny_model.run_with_hooks(tokens, fwd_hooks=hooks)
        torch.testing.assert_close(logits, clean)
        torch.testing.assert_close(seen["x"], cache[reads][:, 1:])
        torch.testing.assert_close(seen["y"], cache[name][:, 1:])


def _mean_logit(logits):
    return logits.mean()


TYPO = HOOK + "e"
HOOKED_PASSES = {
    "run_with_hooks": lambda m, t, sae: splice.run_with_hooks(m, t, [(TYPO, splice.zero_hook)]),
    "logits_with": lambda m, t, sae: splice.logits_with(m, t, TYPO, splice.zero_hook),
    "ablation_effects": lambda m, t, sae: circuits.ablation_effects(
        m, sae, TYPO, t, _mean_logit, [0], progress=False
    ),
    "steering_effects": lambda m, t, sae: steering.steering_effects(
        m, TYPO, torch.ones(1, m.cfg.d_model), 1.0, t, _mean_logit
    ),
    "ce_loss_recovered": lambda m, t, sae: metrics.ce_loss_recovered(m, sae, TYPO, t),
}


@pytest.mark.parametrize("name", sorted(HOOKED_PASSES))
def test_a_misspelt_hook_name_raises_instead_of_reading_as_no_effect(tiny_model, setup, name):
    tokens, sae = setup
    # the bridge itself skips an unknown name and returns the clean logits
    skipped = tiny_model.run_with_hooks(tokens, fwd_hooks=[(TYPO, splice.zero_hook)])
    assert torch.equal(skipped, tiny_model(tokens))
    with pytest.raises(KeyError, match=f"Did you mean one of: {HOOK}"):
        HOOKED_PASSES[name](tiny_model, tokens, sae)
