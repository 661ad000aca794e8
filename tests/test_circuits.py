"""Ablation, attribution patching, edges and faithfulness on the tiny model with random SAEs."""

import matplotlib
import pytest
import torch

from labhelpers import circuits, splice
from labhelpers.sae import ReLUSAE, SAEConfig, TopKSAE
from labhelpers.transcoder import Transcoder

matplotlib.use("Agg")

UP, DOWN = "blocks.1.hook_resid_pre", "blocks.3.hook_resid_pre"
LINEAR = "unembed.hook_in"  # after the final layer norm: the logits are linear in it
A, B = 5, 7  # two arbitrary vocabulary tokens for the logit difference


def metric(logits):
    return circuits.logit_diff(logits, A, B)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model


@pytest.fixture(scope="module")
def tokens(random_tokens):
    return random_tokens(3, 10)


def relu_sae(model, seed):
    """A random ReLU SAE whose latents fire on real activations (smooth gradients)."""
    d_model = model.cfg.d_model
    sae = ReLUSAE(SAEConfig(d_in=d_model, d_sae=2 * d_model, seed=seed))
    with torch.no_grad():
        sae.W_dec.mul_(10)  # unit-norm rows: reconstructions on the activations' scale
    return sae


@pytest.fixture(scope="module")
def saes(model):
    return {UP: relu_sae(model, 1), DOWN: relu_sae(model, 2)}


def test_logit_diff_reads_each_rows_position():
    logits = torch.zeros(2, 4, 10)
    logits[0, 3, A], logits[1, 1, B] = 2.0, 1.0
    assert circuits.logit_diff(logits, A, B) == pytest.approx(1.0)  # (2 + 0) / 2
    assert circuits.logit_diff(logits, A, B, torch.tensor([3, 1])) == pytest.approx(0.5)


def test_tokenize_prompts_pads_on_the_right_and_finds_each_last_token(model):
    tokens, last, mask = circuits.tokenize_prompts(model, ["User: hi\nAssistant:", "a"])
    alone = model.to_tokens("a")[0]
    assert last.tolist() == [tokens.shape[1] - 1, len(alone) - 1]
    assert tokens[1, : len(alone)].tolist() == alone.tolist()
    assert mask.sum(1).tolist() == (last + 1).tolist()
    with torch.no_grad():
        padded, single = model(tokens)[1, last[1]], model(alone[None])[0, -1]
    torch.testing.assert_close(padded, single, atol=1e-4, rtol=1e-4)


def test_ablating_nothing_with_the_error_term_reproduces_the_clean_logits(model, saes, tokens):
    sae = saes[UP]
    clean = splice.logits_with(model, tokens, UP, None)
    hook = splice.sae_hook(sae, edit=circuits.ablate_features(sae, []), keep_error=True)
    torch.testing.assert_close(
        splice.logits_with(model, tokens, UP, hook), clean, atol=1e-4, rtol=1e-4
    )


def test_zero_ablation_changes_only_through_active_features(model, tokens):
    d_model = model.cfg.d_model
    sae = TopKSAE(SAEConfig(d_in=d_model, d_sae=8 * d_model, k=4))
    z = sae.encode(model.run_with_cache(tokens, names_filter=[UP])[1][UP][:, 1:])
    active = z.abs().sum((0, 1)) > 0
    inactive = torch.nonzero(~active)[:3, 0]
    strongest = z.abs().sum((0, 1)).argmax().reshape(1)
    effects = circuits.ablation_effects(model, sae, UP, tokens, metric, inactive)
    torch.testing.assert_close(effects, torch.zeros(3), atol=1e-5, rtol=0)
    assert circuits.ablation_effects(model, sae, UP, tokens, metric, strongest).abs() > 1e-4


def test_ablating_several_features_per_pass_gives_the_one_at_a_time_effects(model, saes, tokens):
    sae, features = saes[UP], [3, 0, 7, 5, 1]
    one = circuits.ablation_effects(model, sae, UP, tokens, metric, features, features_per_pass=1)
    two = circuits.ablation_effects(model, sae, UP, tokens, metric, features, features_per_pass=2)
    assert one.abs().max() > 1e-4
    torch.testing.assert_close(two, one, atol=1e-5, rtol=1e-4)


def test_mean_ablation_writes_the_mean_into_the_chosen_features():
    sae = ReLUSAE(SAEConfig(d_in=4, d_sae=6))
    means = torch.arange(6.0)
    z = torch.ones(2, 3, 6)
    out = circuits.ablate_features(sae, [1, 4], "mean", means)(z.clone())
    assert out[..., 1].eq(1.0).all() and out[..., 4].eq(4.0).all()
    assert out[..., [0, 2, 3, 5]].eq(1.0).all()
    with pytest.raises(ValueError):
        circuits.ablate_features(sae, [1], "mean")


def test_feature_means_leave_out_bos_and_padding(model, saes, tokens):
    sae = saes[UP]
    x = model.run_with_cache(tokens, names_filter=[UP])[1][UP]
    mask = torch.ones(tokens.shape, dtype=torch.bool)
    mask[0, 5:] = False
    expected = torch.cat([sae.encode(x[0, 1:5]), sae.encode(x[1:, 1:].flatten(0, 1))]).mean(0)
    got = circuits.feature_means(model, sae, UP, tokens, mask)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_attribution_patching_is_exact_when_the_metric_is_linear_in_the_latents(
    model, tokens, mode
):
    sae = relu_sae(model, 3)
    means = circuits.feature_means(model, sae, LINEAR, tokens) if mode == "mean" else None
    estimate = circuits.attribution_patching(model, sae, LINEAR, tokens, metric, mode, means)
    top = estimate.abs().argsort(descending=True)[:8]
    exact = circuits.ablation_effects(model, sae, LINEAR, tokens, metric, top, mode, means)
    assert exact.abs().max() > 1e-3  # the case is not trivially zero
    torch.testing.assert_close(estimate[top], exact, atol=2e-4, rtol=1e-3)


def test_attribution_patching_matches_finite_differences(model, saes, tokens):
    """Scaling latent f by (1 - eps) moves the metric by about eps * attribution_f."""
    sae, eps = saes[UP], 1e-2
    estimate = circuits.attribution_patching(model, sae, UP, tokens, metric)
    clean = circuits._metric_with(model, tokens, metric, [])
    for f in estimate.abs().argsort(descending=True)[:3].tolist():

        def shrink(z, f=f):
            z[..., f] = z[..., f] * (1 - eps)
            return z

        hook = splice.sae_hook(sae, edit=shrink, keep_error=True)
        moved = clean - circuits._metric_with(model, tokens, metric, [(UP, hook)])
        assert moved / eps == pytest.approx(float(estimate[f]), rel=0.05)


def test_attribution_patching_approximates_real_ablation_through_later_layers(model, saes, tokens):
    sae = saes[UP]
    estimate = circuits.attribution_patching(model, sae, UP, tokens, metric)
    top = estimate.abs().argsort(descending=True)[:20]
    exact = circuits.ablation_effects(model, sae, UP, tokens, metric, top)
    r = torch.corrcoef(torch.stack([estimate[top], exact]))[0, 1]
    assert r > 0.8, f"Pearson {float(r):.3f}"


@pytest.mark.parametrize("patch", ["zero", "mean"])
def test_integrated_gradients_equal_attribution_patching_when_the_metric_is_linear(
    model, tokens, patch
):
    saes = {LINEAR: relu_sae(model, 3)}
    means = circuits.node_means(model, saes, tokens) if patch == "mean" else None
    linear = circuits.node_attributions(model, saes, tokens, metric, means)[LINEAR]
    ig = circuits.integrated_gradients(model, saes, tokens, metric, means, steps=3)[LINEAR]
    assert linear.abs().max() > 1e-3
    torch.testing.assert_close(ig, linear, atol=2e-4, rtol=1e-3)


def test_integrated_gradients_add_up_to_patching_the_whole_layer(model, saes, tokens):
    """Completeness: one SAE's scores sum to metric(clean) - metric(all its nodes patched),
    which the clean-point gradient misses where the model curves (non-trivially here)."""
    means = circuits.node_means(model, saes, tokens)
    clean = circuits._metric_with(model, tokens, metric, [])
    for name in saes:
        one = {name: saes[name]}
        patched = circuits._metric_keeping(model, one, tokens, metric, set(), means)
        ig = circuits.integrated_gradients(model, one, tokens, metric, means, steps=32)[name]
        linear = circuits.node_attributions(model, one, tokens, metric, means)[name]
        assert float(ig.sum()) == pytest.approx(clean - patched, rel=0.01)
        assert abs(float(linear.sum()) - (clean - patched)) > 5 * abs(
            float(ig.sum()) - (clean - patched)
        )


def test_integrated_gradients_reject_zero_steps(model, saes, tokens):
    with pytest.raises(ValueError, match="steps"):
        circuits.integrated_gradients(model, saes, tokens, metric, steps=0)


def test_edges_have_one_row_per_downstream_node_and_sum_to_node_attributions(model, saes, tokens):
    small = ReLUSAE(SAEConfig(d_in=model.cfg.d_model, d_sae=32, seed=5))  # 33 backwards
    saes = {UP: saes[UP], DOWN: small}
    attributions = circuits.node_attributions(model, saes, tokens, metric)
    d_sae = saes[UP].cfg.d_sae
    assert attributions[UP].shape == (d_sae + 1,) and attributions[DOWN].shape == (33,)
    every_down = [*range(32), circuits.ERROR]
    edges = circuits.edge_attributions(model, saes, tokens, metric, every_down)
    assert edges.shape == (33, d_sae + 1)
    # Everything from blocks.1 to the logits passes blocks.3's residual stream, so the
    # flows through all downstream nodes (error node included) add up to each node's effect.
    torch.testing.assert_close(edges.sum(0), attributions[UP], atol=1e-5, rtol=1e-4)


def test_build_circuit_keeps_error_nodes_and_thresholds_edges(model, saes, tokens):
    attributions = circuits.node_attributions(model, saes, tokens, metric)

    def edge_fn(down):
        return circuits.edge_attributions(model, saes, tokens, metric, down)

    full = circuits.build_circuit(attributions, 3, edge_fn, edge_threshold=0.0)
    for hook in (UP, DOWN):
        layer = [node for node in full.nodes if node.hook == hook]
        assert len(layer) in (3, 4) and any(node.is_error for node in layer)
    assert len(full.edges) == sum(n.hook == UP for n in full.nodes) * sum(
        n.hook == DOWN for n in full.nodes
    )
    middle = sorted(abs(e.weight) for e in full.edges)[len(full.edges) // 2]
    pruned = circuits.build_circuit(attributions, 3, edge_fn, edge_threshold=middle)
    assert 0 < len(pruned.edges) < len(full.edges)
    assert all(abs(e.weight) >= middle for e in pruned.edges)
    ax = circuits.plot_circuit(pruned)
    assert len(ax.collections) == len(pruned.nodes)  # one marker per node
    matplotlib.pyplot.close("all")


def patched_everywhere(model, saes, tokens, means):
    """m(∅) by hand: each spliced activation (positions 1 onwards) set, by a plain hook, to
    what its SAE gives with every node at its mean, decode(mean z) + mean error."""
    hooks = []
    for name, sae in saes.items():
        mean_z, mean_error = means[name]
        value = (sae.decode(mean_z) + mean_error).detach()

        def hook(act, hook=None, value=value):
            out = act.clone()
            out[:, 1:] = value
            return out

        hooks.append((name, hook))
    with torch.no_grad():
        return float(metric(model.run_with_hooks(tokens, fwd_hooks=hooks)))


def test_faithfulness_of_the_full_and_the_empty_circuit(model, saes, tokens):
    means = circuits.node_means(model, saes, tokens)
    everything = {(h, f) for h, sae in saes.items() for f in [*range(sae.cfg.d_sae), -1]}
    full = circuits.faithfulness(model, saes, tokens, metric, everything, means)
    empty = circuits.faithfulness(model, saes, tokens, metric, set(), means)
    with torch.no_grad():
        clean = float(metric(model(tokens)))
    # the baselines, each computed another way: the clean model, and every node patched
    assert full["m_full"] == pytest.approx(clean, abs=1e-5)
    assert full["m_empty"] == pytest.approx(
        patched_everywhere(model, saes, tokens, means), abs=1e-5
    )
    assert abs(full["m_full"] - full["m_empty"]) > 1e-3  # ablating everything matters here
    # every node kept, error nodes included, is the model itself; so is M minus nothing
    assert full["m_circuit"] == pytest.approx(full["m_full"], abs=1e-4)
    assert full["faithfulness"] == pytest.approx(1.0, abs=1e-3)
    assert empty["m_without_circuit"] == pytest.approx(full["m_full"], abs=1e-4)
    assert empty["completeness"] == pytest.approx(1.0, abs=1e-3)


def test_faithfulness_of_one_feature_on_a_linear_toy(model, tokens):
    """With the metric linear in the nodes, F({f}) is f's share of the summed node effects."""
    saes = {LINEAR: relu_sae(model, 4)}
    means = circuits.node_means(model, saes, tokens)
    attributions = circuits.node_attributions(model, saes, tokens, metric, means)[LINEAR]
    f = int(attributions[:-1].abs().argmax())
    result = circuits.faithfulness(model, saes, tokens, metric, {(LINEAR, f)}, means)
    share = float(attributions[f] / attributions.sum())
    assert abs(share) > 0.01
    assert result["faithfulness"] == pytest.approx(share, rel=1e-3, abs=1e-4)
    assert result["completeness"] == pytest.approx(1 - share, rel=1e-3, abs=1e-4)


def test_faithfulness_with_a_reference_reuses_its_baselines(model, saes, tokens, monkeypatch):
    means = circuits.node_means(model, saes, tokens)
    circuit = {(UP, 0), (UP, 3), (DOWN, circuits.ERROR)}
    passes = []
    counted = circuits._metric_with

    def count(*args, **kwargs):
        passes.append(1)
        return counted(*args, **kwargs)

    monkeypatch.setattr(circuits, "_metric_with", count)
    alone = circuits.faithfulness(model, saes, tokens, metric, circuit, means)
    assert len(passes) == 4  # m(M), m(∅), m(C), m(M \ C)
    reference = circuits.faithfulness(model, saes, tokens, metric, set(), means)
    passes.clear()
    reused = circuits.faithfulness(model, saes, tokens, metric, circuit, means, reference)
    assert len(passes) == 2  # m(C) and m(M \ C) only: m(M) and m(∅) come from the reference
    assert reused == pytest.approx(alone, abs=1e-6)
    # the reference's baselines are the ones used, not recomputed ones
    shifted = dict(reference, m_full=reference["m_full"] + 1.0)
    moved = circuits.faithfulness(model, saes, tokens, metric, circuit, means, shifted)
    assert moved["m_full"] == shifted["m_full"]
    assert moved["faithfulness"] == pytest.approx(
        (alone["m_circuit"] - alone["m_empty"]) / (shifted["m_full"] - alone["m_empty"]), abs=1e-6
    )


# --------------------------------------------------------------------------------------
# Transcoders as nodes: keyed by the MLP output they replace
# --------------------------------------------------------------------------------------

MLP1, MLP2 = "blocks.1.hook_mlp_out", "blocks.2.hook_mlp_out"


def random_transcoder(model, seed):
    """A random transcoder with every latent free to fire (k = d_sae: a ReLU layer, so
    small changes never swap latents in or out of the top k)."""
    tc = Transcoder(SAEConfig(d_in=model.cfg.d_model, d_sae=48, k=48, seed=seed))
    with torch.no_grad():
        tc.W_dec.mul_(0.5)  # unit-norm rows: outputs on the MLP output's scale
    return tc


@pytest.fixture(scope="module")
def transcoders(model):
    return {MLP1: random_transcoder(model, 6), MLP2: random_transcoder(model, 7)}


def test_transcoder_nodes_read_the_mlp_input_and_keep_its_output_with_every_node(
    model, transcoders, tokens
):
    means = circuits.node_means(model, transcoders, tokens)
    _, cache = model.run_with_cache(tokens)
    tc = transcoders[MLP1]
    z = tc.encode(cache["blocks.1.mlp.hook_in"][:, 1:])
    error = cache[MLP1][:, 1:] - tc.decode(z)
    torch.testing.assert_close(means[MLP1][0], z.flatten(0, 1).mean(0))
    torch.testing.assert_close(means[MLP1][1], error.flatten(0, 1).mean(0))
    everything = {(h, f) for h in transcoders for f in [*range(48), circuits.ERROR]}
    result = circuits.faithfulness(model, transcoders, tokens, metric, everything, means)
    assert abs(result["m_full"] - result["m_empty"]) > 1e-3
    assert result["m_circuit"] == pytest.approx(result["m_full"], abs=1e-4)
    # nothing kept: each MLP output is decode(mean z) + mean error, set by a plain hook
    patched = patched_everywhere(model, transcoders, tokens, means)
    assert result["m_empty"] == pytest.approx(patched, abs=1e-5)


def test_attribution_patching_of_a_transcoder_matches_finite_differences(
    model, transcoders, tokens
):
    """Shrinking transcoder latent f by (1 - eps), error kept, moves the metric by about
    eps times its attribution; the gradient reaches it through two MLPs' replacements."""
    eps = 1e-3
    scores = circuits.node_attributions(model, transcoders, tokens, metric)[MLP1]
    tc = transcoders[MLP1]
    clean = circuits._metric_with(model, tokens, metric, [])
    for f in scores[:-1].abs().argsort(descending=True)[:3].tolist():

        def shrink(x, y, f=f):
            z = tc.encode(x)
            error = y - tc.decode(z)
            z[..., f] *= 1 - eps
            return tc.decode(z) + error

        moved = clean - circuits._metric_with(
            model, tokens, metric, splice.replacing_hooks(MLP1, tc, shrink)
        )
        assert moved / eps == pytest.approx(float(scores[f]), rel=0.05)


def test_integrated_gradients_of_a_transcoder_add_up_to_patching_its_mlp(
    model, transcoders, tokens
):
    means = circuits.node_means(model, transcoders, tokens)
    clean = circuits._metric_with(model, tokens, metric, [])
    one = {MLP2: transcoders[MLP2]}
    patched = circuits._metric_keeping(model, one, tokens, metric, set(), means)
    ig = circuits.integrated_gradients(model, one, tokens, metric, means, steps=16)[MLP2]
    assert abs(clean - patched) > 1e-3
    assert float(ig.sum()) == pytest.approx(clean - patched, rel=0.02)


def test_edges_into_a_transcoder_match_finite_differences(model, saes, transcoders, tokens):
    """The weight of u -> d is grad_d(metric) . (d d / d u) . u: shrink u by (1 - eps) and
    read how far d's latent moves, weighted by the metric's gradient at d."""
    eps = 1e-3
    pair = {UP: saes[UP], MLP2: transcoders[MLP2]}
    logits, records = circuits._spliced_forward(model, pair, tokens)
    grad_down = torch.autograd.grad(metric(logits), records[MLP2]["z"])[0]
    attributions = circuits.node_attributions(model, pair, tokens, metric)
    d = int(attributions[MLP2][:-1].abs().argmax())
    edges = circuits.edge_attributions(model, pair, tokens, metric, [d])[0]
    seen = {}

    def record_z(act, hook=None):
        seen["z"] = transcoders[MLP2].encode(act[:, 1:])
        return act

    @torch.no_grad()
    def z_down(hooks):
        model.run_with_hooks(tokens, fwd_hooks=[*hooks, ("blocks.2.mlp.hook_in", record_z)])
        return seen["z"][..., d]

    clean_z = z_down([])
    for u in edges[:-1].abs().argsort(descending=True)[:3].tolist():

        def shrink(z, u=u):
            z[..., u] = z[..., u] * (1 - eps)
            return z

        moved = z_down([(UP, splice.sae_hook(saes[UP], edit=shrink, keep_error=True))])
        estimate = -(grad_down[..., d] * (moved - clean_z)).sum() / eps
        assert float(estimate) == pytest.approx(float(edges[u]), rel=0.05)


def test_a_transcoder_must_replace_an_mlp_output(model, tokens):
    tc = random_transcoder(model, 8)
    with pytest.raises(ValueError, match="hook_mlp_out"):
        circuits.node_means(model, {UP: tc}, tokens)


# --------------------------------------------------------------------------------------
# Refusals in one pass, choosing features, controls
# --------------------------------------------------------------------------------------

REFUSAL = "I can't help with that."


def test_forced_refusals_match_greedy_decoding(model):
    from labhelpers import corpus, models

    chats = corpus.chat_prompts("val", 4, seed=3)
    prompts = [chat.prompt for chat in chats]
    greedy = [corpus.is_refusal(models.greedy_completion(model, p, 8)) for p in prompts]
    assert 0 < sum(greedy) < len(greedy)  # both outcomes occur, so agreement means something
    assert circuits.forced_refusals(model, prompts, REFUSAL).tolist() == greedy


def test_forced_refusals_apply_the_hooks(model):
    prompts = ["User: How do I steal a password?\nAssistant:"]

    def ban_refusal_start(act, hook=None):  # at the logits' input: push " I" down hard
        return act - 100.0 * model.W_U[:, model.to_single_token(" I")]

    assert circuits.forced_refusals(model, prompts, REFUSAL)[0]  # refused without the hook
    assert not circuits.forced_refusals(model, prompts, REFUSAL, [(LINEAR, ban_refusal_start)])[0]


def test_an_ablation_hook_with_no_features_is_the_identity(model, saes, tokens):
    clean = splice.logits_with(model, tokens, UP, None)
    hooked = splice.logits_with(model, tokens, UP, circuits.ablation_hook(saes[UP], []))
    torch.testing.assert_close(hooked, clean, atol=1e-4, rtol=1e-4)


def test_attribution_patching_on_top_of_an_edit_is_exact_when_linear(model, tokens):
    sae = relu_sae(model, 6)
    estimate = circuits.attribution_patching(model, sae, LINEAR, tokens, metric)
    first = estimate.abs().argsort(descending=True)[:2].tolist()
    edit = circuits.ablate_features(sae, first)
    on_top = circuits.attribution_patching(model, sae, LINEAR, tokens, metric, edit=edit)
    assert on_top[first].abs().max() == 0  # already ablated: nothing left to remove
    other = int(on_top.abs().argmax())
    both = circuits._metric_with(
        model, tokens, metric, [(LINEAR, circuits.ablation_hook(sae, first))]
    )
    three = circuits._metric_with(
        model, tokens, metric, [(LINEAR, circuits.ablation_hook(sae, [*first, other]))]
    )
    assert abs(float(on_top[other])) > 1e-3
    assert float(on_top[other]) == pytest.approx(both - three, rel=1e-3, abs=1e-4)


def test_select_features_first_picks_the_best_difference_then_no_repeats(model, tokens):
    sae = relu_sae(model, 7)
    other = tokens.flip(0)

    def other_metric(logits):
        return circuits.logit_diff(logits, B, A)

    target, avoid = (tokens, metric), (other, other_metric)
    chosen = circuits.select_features(model, sae, LINEAR, target, avoid, 4, avoid_weight=0.5)
    difference = circuits.attribution_patching(
        model, sae, LINEAR, tokens, metric
    ) - 0.5 * circuits.attribution_patching(model, sae, LINEAR, other, other_metric)
    assert chosen[0] == int(difference.argmax())
    assert len(set(chosen)) == 4
    # With a linear metric, ablating earlier picks does not change the later estimates.
    assert chosen == difference.argsort(descending=True)[:4].tolist()


def test_select_features_chooses_only_allowed_features(model, tokens):
    sae = relu_sae(model, 7)
    target, avoid = (tokens, metric), (tokens.flip(0), metric)
    unrestricted = circuits.select_features(model, sae, LINEAR, target, avoid, 3, progress=False)
    allowed = torch.ones(sae.cfg.d_sae, dtype=torch.bool)
    allowed[unrestricted[0]] = False  # the feature chosen first without the restriction
    chosen = circuits.select_features(model, sae, LINEAR, target, avoid, 3, allowed=allowed)
    assert unrestricted[0] not in chosen
    assert all(allowed[f] for f in chosen) and len(set(chosen)) == 3


def test_firing_rates_count_active_tokens_without_bos_or_padding(model, saes, tokens):
    sae = saes[UP]
    mask = torch.ones(tokens.shape, dtype=torch.bool)
    mask[1, 6:] = False
    x = model.run_with_cache(tokens, names_filter=[UP])[1][UP]
    z = torch.cat([sae.encode(x[0, 1:]), sae.encode(x[1, 1:6]), sae.encode(x[2, 1:])])
    rates = circuits.firing_rates(model, sae, UP, tokens, mask)
    torch.testing.assert_close(rates, (z > 0).float().mean(0))
    assert 0 < rates.max() <= 1


def test_matched_controls_take_the_closest_allowed_rate_once_each():
    rates = torch.tensor([0.10, 0.11, 0.30, 0.12, 0.29, 0.50])
    allowed = torch.tensor([True, True, False, True, True, True])
    assert circuits.matched_controls(rates, [0, 2], allowed) == [1, 4]
    assert circuits.matched_controls(rates, [0, 1], allowed) == [3, 4]  # 1 is chosen, 3 taken
    with pytest.raises(ValueError, match="no allowed feature"):
        circuits.matched_controls(rates, [0, 1, 3], torch.tensor([1, 1, 0, 1, 0, 0]).bool())


def test_matched_controls_draw_from_the_nearest_pool_by_seed():
    rates = 0.5 + torch.tensor([0.0, 0.01, -0.02, 0.03, -0.04, 0.05, -0.06, 0.4])
    allowed = torch.ones(8, dtype=torch.bool)
    draws = [circuits.matched_controls(rates, [0], allowed, pool=3, seed=s)[0] for s in range(30)]
    assert set(draws) == {1, 2, 3}  # only the three closest, and each of them for some seed
    assert circuits.matched_controls(rates, [0], allowed, pool=3, seed=7)[0] == draws[7]
    assert circuits.matched_controls(rates, [0], allowed) == [1]  # pool 1: the closest
    with pytest.raises(ValueError, match="pool"):
        circuits.matched_controls(rates, [0], allowed, pool=0)


# --------------------------------------------------------------------------------------
# Greedy circuit search
# --------------------------------------------------------------------------------------


def test_greedy_circuit_takes_the_best_single_node_then_the_best_pair(model, saes, tokens):
    means = circuits.node_means(model, saes, tokens)
    errors = {(UP, circuits.ERROR), (DOWN, circuits.ERROR)}
    candidates = [(UP, f) for f in range(4)] + [(DOWN, f) for f in range(4)]

    def faith(circuit):
        return circuits.faithfulness(model, saes, tokens, metric, circuit | errors, means)[
            "faithfulness"
        ]

    first = max(candidates, key=lambda c: faith({c}))
    second = max((c for c in candidates if c != first), key=lambda c: faith({first, c}))
    chosen = circuits.greedy_circuit(
        model, saes, tokens, metric, candidates, 2, means, keep=errors, progress=False
    )
    assert chosen == [first, second]
    assert not errors & set(chosen)


def test_greedy_circuit_on_a_linear_toy_follows_the_node_attributions(model, tokens):
    """With the metric linear in the nodes, F adds up over nodes: greedy = sort by effect."""
    saes = {LINEAR: relu_sae(model, 4)}
    means = circuits.node_means(model, saes, tokens)
    attributions = circuits.node_attributions(model, saes, tokens, metric, means)[LINEAR]
    sign = 1 if float(attributions.sum()) > 0 else -1  # of m(M) - m(∅): every node's effect
    by_effect = sorted(range(12), key=lambda f: -sign * float(attributions[f]))
    candidates = [(LINEAR, f) for f in range(12)]
    chosen = circuits.greedy_circuit(
        model, saes, tokens, metric, candidates, 4, means, progress=False
    )
    assert [f for _, f in chosen] == by_effect[:4]


def test_greedy_circuit_rejects_more_nodes_than_candidates(model, saes, tokens):
    with pytest.raises(ValueError, match="distinct candidates"):
        circuits.greedy_circuit(model, saes, tokens, metric, [(UP, 0), (UP, 0)], 2, progress=False)
