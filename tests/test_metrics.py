"""Tests for labhelpers.metrics on cases whose answers are known by hand."""

import numpy as np
import pytest
import torch

from labhelpers import metrics
from labhelpers.sae import BatchTopKSAE, SAEConfig


def test_fvu_is_around_the_mean_and_legacy_is_around_zero():
    x = torch.tensor([[10.0, 1.0], [10.0, -1.0], [10.0, 3.0], [10.0, -3.0]])
    mean_guess = x.mean(0).expand_as(x)
    assert metrics.fvu(x, mean_guess) == pytest.approx(1.0)
    assert metrics.explained_variance(x, mean_guess) == pytest.approx(0.0)
    assert metrics.fvu(x, x) == 0.0
    # Around zero the constant offset counts as "explained": far smaller than 1.
    assert metrics.fvu_around_zero_legacy(x, mean_guess) == pytest.approx(20 / 420)


def test_mse_l0_l2_ratio():
    x = torch.tensor([[3.0, 4.0]])
    assert metrics.mse(x, torch.zeros_like(x)) == pytest.approx(12.5)
    assert metrics.l2_ratio(x, 0.5 * x) == pytest.approx(0.5)
    z = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 0.5]])
    assert metrics.l0(z) == pytest.approx(1.5)


def test_density_dead_dense():
    z = torch.zeros(10, 4)
    z[:, 0] = 1.0  # always on
    z[0, 1] = 1.0  # on 10% of inputs
    density = metrics.feature_density(z)
    assert density.tolist() == pytest.approx([1.0, 0.1, 0.0, 0.0])
    assert metrics.dead_fraction(density) == 0.5
    assert metrics.dense_fraction(density, threshold=0.5) == 0.25
    counts, edges = metrics.density_histogram(density, bins=6, low=-3.0)
    assert counts.sum() == 2 and edges[0] == -3.0 and edges[-1] == 0.0


def test_ground_truth_alignment_counts_recovered_features():
    true = torch.eye(4)
    W_dec = torch.stack([torch.tensor([1.0, 0, 0, 0]), torch.tensor([0, -2.0, 0, 0]),
                         torch.tensor([0, 0, 1.0, 1.0])])  # fmt: skip
    result = metrics.ground_truth_alignment(W_dec, true)
    assert result["max_cos"].tolist() == pytest.approx([1.0, 1.0, 2**-0.5, 2**-0.5])
    assert result["n_recovered"] == 2  # sign does not matter: |cos|
    assert result["median_max_cos"] == pytest.approx(2**-0.5)


def test_evaluate_reports_every_figure_in_eval_mode_and_restores_mode():
    """BatchTopK keeps k * batch latents per batch in training and applies its threshold in
    eval mode, so the modes give different latents: every figure must be eval mode's."""
    sae = BatchTopKSAE(SAEConfig(d_in=6, d_sae=12, k=2, seed=3))
    truth = torch.eye(6)
    with torch.no_grad():
        sae.threshold.fill_(0.05)
        sae.b_enc.fill_(0.1)
        sae.b_dec.normal_(generator=torch.Generator().manual_seed(1))
        sae.W_dec[:3] = 2.0 * truth[:3]  # three true directions recovered (|cos| 1)
        sae.W_enc[:, 11], sae.b_enc[11] = 0.0, -1.0  # latent 11 never fires
    x = torch.randn(100, 6, generator=torch.Generator().manual_seed(0))
    sae.train()
    result = metrics.evaluate(sae, x, true_directions=truth, batch_size=33)
    assert sae.training
    assert float(sae.threshold) == pytest.approx(0.05) and int(sae.threshold_updates) == 0
    sae.eval()
    with torch.no_grad():
        z = sae.encode(x)
        x_hat = sae.decode(z)
        alignment = metrics.ground_truth_alignment(sae.W_dec, truth)
    density = metrics.feature_density(z)
    expected = {
        "l0": metrics.l0(z),
        "mse": metrics.mse(x, x_hat),
        "fvu": metrics.fvu(x, x_hat),
        "explained_variance": metrics.explained_variance(x, x_hat),
        "fvu_around_zero_legacy": metrics.fvu_around_zero_legacy(x, x_hat),
        "l2_ratio": metrics.l2_ratio(x, x_hat),
        "dead_fraction": metrics.dead_fraction(density),
        "dense_fraction": metrics.dense_fraction(density),
        "median_max_cos": alignment["median_max_cos"],
        "n_recovered": alignment["n_recovered"],
    }
    assert result == pytest.approx(expected, rel=1e-5, abs=1e-7)
    # the case is not degenerate: eval mode is not k per input, and no figure is trivial
    assert expected["l0"] > 3.0 and abs(expected["l2_ratio"] - 1.0) > 0.05
    assert expected["dead_fraction"] == pytest.approx(1 / 12) and expected["n_recovered"] == 3
    assert 0 < expected["dense_fraction"] < 1 and 0 < expected["median_max_cos"] < 0.9
    assert metrics.evaluate(sae, x, batch_size=33)["l0"] == pytest.approx(expected["l0"])
    assert not sae.training  # an SAE in eval mode stays there


def test_precision_recall_on_a_known_case():
    fires = np.array([1, 1, 1, 0, 0, 1], bool)
    labels = np.array([1, 1, 0, 1, 0, 0], bool)
    scores = metrics.precision_recall(fires, labels)
    assert scores["precision"] == 0.5 and np.isclose(scores["recall"], 2 / 3)
    assert np.isclose(scores["f1"], 2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert metrics.precision_recall(np.zeros(3, bool), np.ones(3, bool))["f1"] == 0.0


def test_f1_matrix_matches_precision_recall_per_unit():
    torch.manual_seed(0)
    acts = torch.rand(500, 6) - 0.5
    labels = torch.rand(500, 3) > 0.7
    table = metrics.f1_matrix(acts, labels, threshold=0.1, chunk=64)
    for u in range(6):
        for c in range(3):
            expected = metrics.precision_recall((acts[:, u] > 0.1).numpy(), labels[:, c].numpy())
            for key in ("precision", "recall", "f1"):
                assert np.isclose(float(table[key][u, c]), expected[key], atol=1e-6)


def test_concept_scores_pick_the_planted_detector_and_score_it_on_held_out_data():
    """Unit 2 detects concept "a" perfectly on the selection split; unit 4 detects "b" only
    above half its maximum; unit 0 fits "a" on the selection split only."""
    g = torch.Generator().manual_seed(0)
    n = 2000
    labels = torch.rand(n, 2, generator=g) > 0.8
    acts = torch.rand(n, 5, generator=g) * 0.1
    acts[:, 2] += labels[:, 0] * 1.0
    acts[:, 4] = torch.where(labels[:, 1], 1.0, 0.3)  # fires weakly everywhere, strongly on "b"
    select, test = slice(0, 1000), slice(1000, n)
    rows = metrics.concept_scores(
        acts[select], labels[select], acts[test], labels[test], ["a", "b"]
    )
    assert [r["unit"] for r in rows] == [2, 4]
    assert rows[0]["f1"] == 1.0 and rows[1]["f1"] == 1.0 and rows[1]["threshold_fraction"] == 0.5
    # a unit that memorised the selection split fails on the test split
    cheat = acts.clone()
    cheat[:, 0] = 0.0
    cheat[select, 0] = labels[select, 0] * 5.0
    cheat[:, 2] = 0.0
    rows = metrics.concept_scores(
        cheat[select], labels[select], cheat[test], labels[test], ["a", "b"]
    )
    assert rows[0]["unit"] == 0 and rows[0]["select_f1"] == 1.0 and rows[0]["f1"] == 0.0


def test_probe_finds_a_concept_no_basis_direction_carries_and_only_linear_ones():
    """Concept "a" is one direction spread over all 8 coordinates, so no basis direction
    detects it while a probe does; "b" (|x_0| large, either sign) is no half-space, so
    even the probe cannot fit it."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 8, generator=g)
    a = x @ (torch.ones(8) / 8**0.5) > 1.0
    b = x[:, 0].abs() > 1.5
    labels = torch.stack([a, b], 1)
    select, test = slice(0, 2000), slice(2000, 4000)
    with torch.no_grad():  # as a notebook calls it; the probe must still train
        rows = metrics.probe_scores(x[select], labels[select], x[test], labels[test], ["a", "b"])
        again = metrics.probe_scores(x[select], labels[select], x[test], labels[test], ["a", "b"])
    signed = torch.cat([x, -x], 1)  # the basis directions in both signs
    basis = metrics.concept_scores(
        signed[select], labels[select], signed[test], labels[test], ["a", "b"]
    )
    assert rows == again  # deterministic
    assert rows[0]["f1"] >= 0.95 and basis[0]["f1"] < 0.7
    assert rows[1]["f1"] < 0.6  # a linear probe cannot carve out both tails
    assert {"concept", "cutoff", "select_f1", "precision", "recall", "f1"} <= set(rows[0])


def test_group_scores_join_units_that_each_cover_part_of_a_span():
    """Concept "a" is split: unit 0 fires on its first half, unit 1 on its second half;
    unit 2 fires on random tokens. Each half alone scores F1 2/3; together, 1."""
    g = torch.Generator().manual_seed(0)
    n = 4000
    labels = torch.rand(n, 1, generator=g) > 0.7
    half = torch.rand(n, generator=g) > 0.5
    acts = torch.zeros(n, 3)
    acts[:, 0] = (labels[:, 0] & half).float()
    acts[:, 1] = (labels[:, 0] & ~half).float()
    acts[:, 2] = (torch.rand(n, generator=g) > 0.5).float()
    select, test = slice(0, 2000), slice(2000, n)
    args = (acts[select], labels[select], acts[test], labels[test], ["a"])
    (group,) = metrics.group_scores(*args)
    (single,) = metrics.group_scores(*args, max_units=1)
    (best,) = metrics.concept_scores(*args)
    assert sorted(group["units"]) == [0, 1] and group["f1"] == 1.0  # stops: unit 2 only hurts
    assert single["units"] == [best["unit"]] and single["f1"] == pytest.approx(best["f1"])
    assert 0.6 < single["f1"] < 0.72


def _exact_sae(d_in):
    """A ReLU SAE that reconstructs perfectly: z = (relu(x), relu(-x)), x_hat = z1 - z2."""
    from labhelpers.sae import ReLUSAE

    sae = ReLUSAE(SAEConfig(d_in=d_in, d_sae=2 * d_in, apply_b_dec_to_input=False))
    eye = torch.eye(d_in)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_ce_loss_recovered_is_one_for_a_perfect_sae_and_zero_for_a_zero_one(tiny_model):
    from labhelpers import activations

    texts = activations.corpus_texts("val", 50, seed=3)
    tokens = activations.token_rows(texts, tiny_model.tokenizer, 32, 4)
    hook = "blocks.1.hook_resid_pre"
    perfect = metrics.ce_loss_recovered(
        tiny_model, _exact_sae(tiny_model.cfg.d_model), hook, tokens, batch_size=2
    )
    assert abs(perfect["recovered"] - 1.0) < 1e-4 and perfect["kl"] < 1e-5
    assert abs(perfect["loss_sae"] - perfect["loss_clean"]) < 1e-4
    blank = _exact_sae(tiny_model.cfg.d_model)
    with torch.no_grad():
        blank.W_dec.zero_()
    zero = metrics.ce_loss_recovered(tiny_model, blank, hook, tokens)
    assert abs(zero["recovered"]) < 1e-4 and zero["loss_zero"] > zero["loss_clean"]


@pytest.mark.parametrize("batch_size", [2, 4])
def test_ce_loss_recovered_reports_the_losses_and_kl_of_the_whole_set(tiny_model, batch_size):
    """Six rows in three equal batches, or in batches of 4 and 2 (weighted by their rows):
    each figure equals the direct one on all rows at once, the KL being KL(clean || spliced)
    (over every position, BOS's included, in both)."""
    from labhelpers import activations, splice

    texts = activations.corpus_texts("val", 50, seed=3)
    tokens = activations.token_rows(texts, tiny_model.tokenizer, 32, 6)
    hook = "blocks.1.hook_resid_pre"
    lossy = _exact_sae(tiny_model.cfg.d_model)
    with torch.no_grad():
        lossy.W_dec.mul_(0.2)  # a fifth of every activation: a real but partial loss
    result = metrics.ce_loss_recovered(tiny_model, lossy, hook, tokens, batch_size=batch_size)
    clean = splice.logits_with(tiny_model, tokens, hook, None)
    spliced = splice.logits_with(tiny_model, tokens, hook, splice.sae_hook(lossy))
    zeroed = splice.logits_with(tiny_model, tokens, hook, splice.zero_hook)
    expected = {
        "loss_clean": float(splice.next_token_loss(clean, tokens)),
        "loss_sae": float(splice.next_token_loss(spliced, tokens)),
        "loss_zero": float(splice.next_token_loss(zeroed, tokens)),
        "kl": float(splice.kl_divergence(clean, spliced)),
    }
    expected["recovered"] = (expected["loss_zero"] - expected["loss_sae"]) / (
        expected["loss_zero"] - expected["loss_clean"]
    )
    assert result == pytest.approx(expected, abs=1e-5)
    assert 0.05 < expected["recovered"] < 0.95
    # the other direction, KL(spliced || clean), differs here: the test can tell them apart
    assert abs(float(splice.kl_divergence(spliced, clean)) - expected["kl"]) > 1e-2


def test_auc_counts_ordered_pairs_and_ignores_a_common_shift():
    assert metrics.auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert metrics.auc([1.0, 2.0], [3.0, 4.0]) == 0.0
    # pairs: (2,1) above; (2,3), (0,1) and (0,3) below
    assert metrics.auc([2.0, 0.0], [1.0, 3.0]) == 0.25
    assert metrics.auc([1.0], [1.0]) == 0.5
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 50), rng.normal(0, 1, 60)
    assert metrics.auc(pos, neg) == metrics.auc(pos - 7.5, neg - 7.5)
    with pytest.raises(ValueError, match="at least one"):
        metrics.auc([], [1.0])


def test_fit_probe_ranks_new_points_of_a_linear_concept():
    """A probe fitted on one sample ranks a fresh sample of the same linear concept almost
    perfectly, returns one probability column per label, and is the same on a second fit."""
    g = torch.Generator().manual_seed(0)
    x, fresh = torch.randn(400, 6, generator=g), torch.randn(400, 6, generator=g)
    direction = torch.tensor([1.0, -2.0, 0.0, 0.5, 0.0, 0.0])
    labels = torch.stack([x @ direction > 0.3, x[:, 2] > 0], 1)
    with torch.no_grad():  # as a notebook calls it; the probe must still train
        probe = metrics.fit_probe(x, labels)
        again = metrics.fit_probe(x, labels)
    p = probe(fresh)
    assert p.shape == (400, 2) and torch.equal(p, again(fresh))
    truth = (fresh @ direction > 0.3).numpy()
    assert metrics.auc(p[truth, 0].numpy(), p[~truth, 0].numpy()) > 0.98
