"""Splicing an SAE into the tiny model: identities that must hold exactly."""

import math

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


def test_an_edit_changes_only_through_the_edited_latents(tiny_model):
    d_model = tiny_model.cfg.d_model
    sae = TopKSAE(SAEConfig(d_in=d_model, d_sae=4 * d_model, k=8, seed=1))
    with torch.no_grad():
        sae.b_dec.normal_(generator=torch.Generator().manual_seed(0))  # a b_dec that matters
    assert float(sae.b_dec.detach().norm()) > 1.0
    x = torch.randn(2, 12, d_model, generator=torch.Generator().manual_seed(1))
    seen, f = {}, 5

    def bump(z):
        seen["shape"] = tuple(z.shape)
        z[..., f] += 1.0
        return z

    out = splice.sae_hook(sae, edit=bump, keep_error=True)(x)
    assert seen["shape"] == (2, 11, sae.cfg.d_sae)
    # z' = z + e_f, and decode(z') + (x - decode(z)) - x is W_dec[f] whatever b_dec is
    torch.testing.assert_close(
        out[:, 1:] - x[:, 1:], sae.W_dec[f].expand(2, 11, -1), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(out[:, 0], x[:, 0])
    # zeroing every latent leaves b_dec plus the error: x - x_hat + b_dec
    zeroed = splice.sae_hook(sae, edit=lambda z: z * 0.0, keep_error=True)(x)
    x_hat = sae.decode(sae.encode(x[:, 1:]))
    torch.testing.assert_close(zeroed[:, 1:], x[:, 1:] - x_hat + sae.b_dec, atol=1e-5, rtol=1e-5)


def test_kl_divergence_is_kl_clean_to_other():
    """KL([.5, .5] || [.9, .1]) = .5 log(.5/.9) + .5 log(.5/.1) = 0.5108; the reverse
    direction, KL([.9, .1] || [.5, .5]), would give 0.3681."""
    clean = torch.tensor([[[0.5, 0.5]]]).log()
    other = torch.tensor([[[0.9, 0.1]]]).log() + 3.0  # logits: any shift, same distribution
    assert float(splice.kl_divergence(clean, other)) == pytest.approx(0.5108256, abs=1e-6)
    assert float(splice.kl_divergence(other, clean)) == pytest.approx(0.3680642, abs=1e-6)
    # the mean over tokens: a second token with KL 0 halves it
    both = splice.kl_divergence(torch.cat([clean, clean], 1), torch.cat([other, clean], 1))
    assert float(both) == pytest.approx(0.5108256 / 2, abs=1e-6)


def test_zero_hook_and_next_token_loss():
    x = torch.ones(1, 3, 4)
    assert splice.zero_hook(x)[:, 1:].abs().sum() == 0 and splice.zero_hook(x)[0, 0].sum() == 4
    logits = torch.full((1, 3, 5), -1e4)
    tokens = torch.tensor([[0, 2, 4]])
    logits[0, 0, 2] = logits[0, 1, 4] = 0.0  # certain and right
    assert splice.next_token_loss(logits, tokens) < 1e-6
    # uniform logits: every prediction costs log V, so the mean over tokens is log V too
    tokens = torch.randint(0, 7, (3, 5), generator=torch.Generator().manual_seed(0))
    assert float(splice.next_token_loss(torch.zeros(3, 5, 7), tokens)) == pytest.approx(
        math.log(7), abs=1e-6
    )
    # one row right (loss 0), one row uniform (log V): the mean over all tokens is log V / 2
    logits = torch.zeros(2, 3, 5)
    logits[0] = -1e4
    logits[0, 0, 2] = logits[0, 1, 4] = 0.0
    pair = torch.tensor([[0, 2, 4], [0, 1, 3]])
    assert float(splice.next_token_loss(logits, pair)) == pytest.approx(math.log(5) / 2, abs=1e-6)


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
