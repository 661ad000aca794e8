"""Steering hooks on the tiny model: the push lands exactly where asked, and nowhere else."""

import matplotlib

matplotlib.use("Agg")

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from labhelpers import corpus, models, splice, steering

pytestmark = pytest.mark.usefixtures("one_thread")

HOOK = "blocks.1.hook_resid_pre"
EARLIER = "blocks.0.hook_resid_pre"


@pytest.fixture(scope="module")
def setup(tiny_model, random_tokens):
    tokens = random_tokens(2, 10)
    direction = torch.randn(tiny_model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    return tokens, direction


def record(model, tokens, fwd_hooks, names):
    """Activations at ``names`` as seen *after* ``fwd_hooks`` ran there."""
    seen = {}

    def keep(act, hook, name):
        seen[name] = act.detach().clone()

    recorders = [(n, lambda act, hook, n=n: keep(act, hook, n)) for n in names]
    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=[*fwd_hooks, *recorders])
    return seen


def greedy(model, tokens, n, cache=True):
    with torch.no_grad():
        out = model.generate(
            tokens,
            max_new_tokens=n,
            do_sample=False,
            stop_at_eos=False,
            verbose=False,
            return_type="tokens",
            use_past_kv_cache=cache,
        )
    return out[0, tokens.shape[1] :].tolist()


def test_alpha_zero_is_the_identity(tiny_model, setup):
    tokens, direction = setup
    clean = splice.logits_with(tiny_model, tokens, HOOK, None)
    steered = splice.logits_with(tiny_model, tokens, HOOK, steering.steering_hook(direction, 0.0))
    assert torch.equal(steered, clean)
    with steering.steered(tiny_model, HOOK, direction, 0.0):
        assert torch.equal(tiny_model(tokens), clean)


@pytest.mark.parametrize(
    "positions, expected",
    [(None, list(range(1, 10))), ([2, 5], [2, 5]), (slice(3, 6), [3, 4, 5])],
)
def test_the_change_lands_only_at_the_chosen_positions(tiny_model, setup, positions, expected):
    tokens, direction = setup
    alpha = 3.0
    hook = steering.steering_hook(direction, alpha, positions)
    clean = record(tiny_model, tokens, [], [HOOK, EARLIER])
    steered = record(tiny_model, tokens, [(HOOK, hook)], [HOOK, EARLIER])
    diff = steered[HOOK] - clean[HOOK]
    others = [p for p in range(tokens.shape[1]) if p not in expected]
    torch.testing.assert_close(
        diff[:, expected], (alpha * direction).expand(2, len(expected), -1), atol=1e-5, rtol=0
    )
    assert torch.equal(diff[:, others], torch.zeros_like(diff[:, others]))
    assert torch.equal(steered[EARLIER], clean[EARLIER])  # layers before the hook see nothing


def test_the_steered_model_differs_after_the_hook(tiny_model, setup):
    tokens, direction = setup
    clean = splice.logits_with(tiny_model, tokens, HOOK, None)
    steered = splice.logits_with(
        tiny_model, tokens, HOOK, steering.steering_hook(direction, 5.0, [4])
    )
    torch.testing.assert_close(steered[:, :4], clean[:, :4])  # causal: earlier tokens untouched
    assert not torch.allclose(steered[:, 4:], clean[:, 4:], atol=1e-3)


def test_negative_positions_are_refused(setup):
    _, direction = setup
    with pytest.raises(ValueError, match="non-negative"):
        steering.steering_hook(direction, 1.0, [-1])
    with pytest.raises(ValueError, match="non-negative"):
        steering.steering_hook(direction, 1.0, slice(-3, None))


def test_a_direction_of_the_wrong_width_is_refused(tiny_model, setup):
    tokens, direction = setup
    with pytest.raises(ValueError, match="one vector"):
        steering.steering_hook(direction[None], 1.0)
    hook = steering.steering_hook(direction[:-1], 1.0)
    with pytest.raises(ValueError, match=f"width {direction.shape[0]}, the steering direction"):
        splice.logits_with(tiny_model, tokens, HOOK, hook)


def test_the_context_manager_steers_inside_and_cleans_up_after(tiny_model, setup):
    tokens, direction = setup
    clean = splice.logits_with(tiny_model, tokens, HOOK, None)
    expected = splice.logits_with(tiny_model, tokens, HOOK, steering.steering_hook(direction, 4.0))
    with torch.no_grad(), steering.steered(tiny_model, HOOK, direction, 4.0):
        inside = tiny_model(tokens)
    torch.testing.assert_close(inside, expected)
    assert not torch.allclose(inside, clean, atol=1e-3)
    assert torch.equal(splice.logits_with(tiny_model, tokens, HOOK, None), clean)

    with pytest.raises(RuntimeError, match="boom"):
        with steering.steered(tiny_model, HOOK, direction, 4.0):
            raise RuntimeError("boom")
    assert torch.equal(splice.logits_with(tiny_model, tokens, HOOK, None), clean)


def test_an_unknown_hook_name_is_named(tiny_model, setup):
    _, direction = setup
    with pytest.raises(KeyError, match="no hook point"):
        with steering.steered(tiny_model, "blocks.1.hook_resid_pree", direction, 1.0):
            pass


def test_a_single_position_call_is_a_generation_step(setup):
    """With a KV cache each new token arrives alone: steered for positions=None, not for prompt positions."""
    _, direction = setup
    act = torch.zeros(2, 1, direction.numel())
    torch.testing.assert_close(
        steering.steering_hook(direction, 2.0)(act)[:, 0], 2.0 * direction.expand(2, -1)
    )
    assert torch.equal(steering.steering_hook(direction, 2.0, [0, 3])(act), act)
    assert torch.equal(steering.steering_hook(direction, 2.0, slice(0, None))(act), act)


@pytest.mark.parametrize("cache", [False, True])
def test_steering_applies_during_generation(tiny_model, cache):
    """A huge push along a token's unembedding direction at the last layer makes greedy decoding emit it."""
    last = f"blocks.{tiny_model.cfg.n_layers - 1}.hook_resid_post"
    prompt = tiny_model.to_tokens("User: How do I count the lines in a file?\nAssistant:")
    clean = greedy(tiny_model, prompt, 4, cache)
    token = next(t for t in range(1, tiny_model.cfg.d_vocab) if t not in clean)
    direction = tiny_model.W_U[:, token].detach()
    with steering.steered(tiny_model, last, direction, 1000.0):
        assert greedy(tiny_model, prompt, 4, cache) == [token] * 4
    with steering.steered(tiny_model, last, direction, 1000.0, positions=[prompt.shape[1] - 1]):
        at_last = greedy(tiny_model, prompt, 4, cache)
    assert at_last[0] == token
    assert greedy(tiny_model, prompt, 4, cache) == clean  # the hook is gone afterwards
    if not cache:  # only the last prompt position was pushed: the rest is the clean continuation
        with_token = torch.cat([prompt, torch.tensor([[token]])], dim=1)
        assert at_last[1:] == greedy(tiny_model, with_token, 3, cache)


def test_random_control_has_the_norm_and_is_seeded(setup):
    _, direction = setup
    control = steering.random_control(direction, seed=1)
    assert control.shape == direction.shape and control.dtype == direction.dtype
    assert math.isclose(float(control.norm()), float(direction.norm()), rel_tol=1e-5)
    assert torch.equal(control, steering.random_control(direction, seed=1))
    assert not torch.allclose(control, steering.random_control(direction, seed=2))
    assert abs(torch.cosine_similarity(control, direction, dim=0)) < 0.9


def test_equal_norm_rescales_without_turning(setup):
    _, direction = setup
    other = torch.arange(1.0, direction.numel() + 1)
    scaled = steering.equal_norm(direction, other)
    assert math.isclose(float(scaled.norm()), float(direction.norm()), rel_tol=1e-5)
    assert math.isclose(float(torch.cosine_similarity(scaled, other, dim=0)), 1.0, rel_tol=1e-6)


def test_spearman_on_known_cases():
    # y's ranks are 1, 2, 3.5, 5, 3.5 (the two 7s share 3.5); by hand, the rank deviations
    # are x: -2 -1 0 1 2 and y: -2 -1 0.5 2 0.5, so r = 8 / sqrt(10 * 9.5) (scipy agrees)
    assert math.isclose(steering.spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]), 8 / math.sqrt(95))
    assert steering.spearman([0.1, 2, 30], [1, 8, 27]) == pytest.approx(1.0)
    assert steering.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(steering.spearman([1, 2, 3], [4, 4, 4]))


def test_logit_difference_reads_the_last_position(tiny_model):
    prompt = "The weather today is"
    with torch.no_grad():
        logits = tiny_model(tiny_model.to_tokens(prompt))[0, -1]
    expected = float(logits[7] - logits[3])
    assert steering.logit_difference(tiny_model, [prompt], 7, 3) == pytest.approx(
        expected, abs=1e-5
    )
    single = tiny_model.tokenizer.decode([7])
    if tiny_model.to_tokens(single, prepend_bos=False).tolist() == [[7]]:  # strings work too
        assert steering.logit_difference(tiny_model, [prompt], single, 3) == pytest.approx(
            expected, abs=1e-5
        )


def test_refusal_rate_pools_the_kinds(tiny_model):
    prompts = corpus.chat_prompts("val", 2)[:5]  # unequal kinds: 2, 2 and 1

    def rule(completion):
        return len(completion) % 2 == 0

    flags = [rule(models.greedy_completion(tiny_model, p.prompt)) for p in prompts]
    assert steering.refusal_rate(tiny_model, prompts, rule) == pytest.approx(np.mean(flags))


def test_sweep_rows_table_and_plot(tiny_model, setup):
    tokens, direction = setup
    prompts = ["User: How do I list files?\nAssistant:", "The weather today is"]

    def target(model):
        return steering.logit_difference(model, prompts, 10, 11)

    def unrelated(model):
        return steering.logit_difference(model, prompts[1:], 12, 13)

    alphas = [-4.0, 0.0, 4.0]
    random = steering.random_control(direction, seed=0)
    rows = steering.sweep(
        tiny_model,
        HOOK,
        direction,
        alphas,
        target,
        control_fns={"unrelated": unrelated},
        side_effect_tokens=tokens,
        control_directions={"random": random, "scaled": 10 * direction},
        generation_prompts=prompts[:1],
        max_new_tokens=3,
    )
    assert [row["alpha"] for row in rows] == alphas
    expected_keys = {"alpha", "target", "unrelated", "random", "scaled", "kl", "generations"}
    assert all(set(row) == expected_keys for row in rows)
    zero = rows[1]
    assert abs(zero["kl"]) < 1e-6 and rows[0]["kl"] > 1e-4 and rows[2]["kl"] > 1e-4
    assert zero["target"] == pytest.approx(target(tiny_model), abs=1e-5)
    assert zero["generations"] == [models.greedy_completion(tiny_model, prompts[0], 3)]
    assert rows[0]["target"] != pytest.approx(rows[2]["target"])
    # a control direction is rescaled to the norm of the steered one: 10 * d steers like d
    assert all(row["scaled"] == pytest.approx(row["target"], abs=1e-4) for row in rows)
    # the random control is steered along its own direction, which moves the metric
    # differently from d (at alpha 0 every direction is the identity: compare at +-4)
    for i in (0, 2):
        with steering.steered(tiny_model, HOOK, random, alphas[i]):
            assert rows[i]["random"] == pytest.approx(target(tiny_model), abs=1e-5)
        assert abs(rows[i]["random"] - rows[i]["target"]) > 1e-2
    # kl is KL(unsteered || steered along d) on the side-effect tokens
    clean = splice.logits_with(tiny_model, tokens, HOOK, None)
    for row in rows:
        hook = steering.steering_hook(direction, row["alpha"])
        other = splice.logits_with(tiny_model, tokens, HOOK, hook)
        assert row["kl"] == pytest.approx(float(splice.kl_divergence(clean, other)), abs=1e-6)
        if row["alpha"]:  # KL(steered || unsteered) differs here: the direction is pinned
            assert abs(float(splice.kl_divergence(other, clean)) - row["kl"]) > 1e-3

    table = steering.format_table(rows).splitlines()
    assert len(table) == 1 + len(alphas)
    columns = table[0].split()
    assert columns == ["alpha", "target", "unrelated", "random", "scaled", "kl"]
    for row, line in zip(rows, table[1:]):  # the table's numbers are the rows', to 3 digits
        cells = [float(cell) for cell in line.split()]
        assert cells == pytest.approx([row[key] for key in columns], abs=5e-4 + 1e-9)
    ax = steering.plot_sweep(rows, ylabel="refusal rate")
    assert ax.get_ylabel() == "refusal rate"
    assert len(ax.get_lines()) == 4  # target, unrelated, random, scaled
    for line, key in zip(ax.get_lines(), ["target", "unrelated", "random", "scaled"]):
        assert list(line.get_xdata()) == alphas
        assert list(line.get_ydata()) == [row[key] for row in rows]
    plt.close("all")

    with pytest.raises(ValueError, match="clash"):
        steering.sweep(tiny_model, HOOK, direction, [0.0], target, control_fns={"kl": target})
    with pytest.raises(ValueError, match="clash"):
        steering.sweep(
            tiny_model,
            HOOK,
            direction,
            [0.0],
            target,
            control_fns={"random": target},
            control_directions={"random": random},
        )


def test_refusal_margin_is_refusal_logit_minus_best_other():
    logits = torch.zeros(2, 3, 5)
    logits[0, 1] = torch.tensor([0.0, 4.0, 1.0, 2.5, 0.0])  # row 0 ends at position 1
    logits[1, 2] = torch.tensor([0.0, 1.0, 3.0, 0.5, 0.0])  # row 1 ends at position 2
    margin = steering.refusal_margin(logits, torch.tensor([1, 2]), refusal_token=1)
    torch.testing.assert_close(margin, torch.tensor([4.0 - 2.5, 1.0 - 3.0]))


def test_greedy_refusals_match_one_prompt_at_a_time(tiny_model):
    """Batched, right-padded, stopping early: the same verdicts as ``is_refusal(greedy_completion)``."""
    prompts = [p.prompt for p in corpus.chat_prompts("val", 2, seed=3)]
    prompts += [p.prompt for p in corpus.chat_prompts("heldout", 2, seed=3)]
    expected = [corpus.is_refusal(models.greedy_completion(tiny_model, p, 10)) for p in prompts]
    assert steering.greedy_refusals(tiny_model, prompts, corpus.REFUSAL, 10) == expected
    assert any(expected) and not all(expected)  # both verdicts were exercised
    prompts = prompts[::2]
    direction = torch.randn(tiny_model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    with steering.steered(tiny_model, HOOK, direction, 3.0):  # and under a steering hook
        steered = [corpus.is_refusal(models.greedy_completion(tiny_model, p, 10)) for p in prompts]
        assert steering.greedy_refusals(tiny_model, prompts, corpus.REFUSAL, 10) == steered


def test_greedy_refusals_need_the_whole_sentence(tiny_model):
    """Too few new tokens to finish the refusal sentence: no prompt counts as refused."""
    prompts = [p.prompt for p in corpus.chat_prompts("val", 3, seed=3) if p.kind == "harmful"]
    assert any(steering.greedy_refusals(tiny_model, prompts, corpus.REFUSAL, 10))
    assert not any(steering.greedy_refusals(tiny_model, prompts, corpus.REFUSAL, 2))


def test_contrast_features_is_a_difference_of_means():
    from labhelpers.sae import SAEConfig, make_sae

    sae = make_sae("topk", SAEConfig(d_in=6, d_sae=10, k=3, seed=0))
    gen = torch.Generator().manual_seed(0)
    acts, baseline = torch.randn(5, 6, generator=gen), torch.randn(7, 6, generator=gen)
    contrast = steering.contrast_features(sae, acts, baseline)
    with torch.no_grad():
        expected = sae.encode(acts).mean(0) - sae.encode(baseline).mean(0)
    assert contrast.shape == (10,)
    torch.testing.assert_close(contrast, expected)
    assert torch.equal(steering.contrast_features(sae, acts, acts), torch.zeros(10))


def test_steering_effects_one_pass_per_direction(tiny_model, setup):
    tokens, direction = setup

    def metric(logits):
        return logits[:, -1, 7].mean()

    directions = torch.stack([direction, torch.zeros_like(direction), -direction])
    effects = steering.steering_effects(tiny_model, HOOK, directions, 2.0, tokens, metric)
    clean = float(metric(splice.logits_with(tiny_model, tokens, HOOK, None)))
    pushed = splice.logits_with(tiny_model, tokens, HOOK, steering.steering_hook(direction, 2.0))
    assert effects.shape == (3,) and effects[1] == pytest.approx(0.0, abs=1e-5)
    assert effects[0] == pytest.approx(float(metric(pushed)) - clean, abs=1e-4)
    assert effects[0] != pytest.approx(effects[2], abs=1e-3)


def test_the_sweep_shows_progress_only_when_asked(tiny_model, setup, capsys):
    _, direction = setup
    for progress in (True, False):
        steering.sweep(tiny_model, HOOK, direction, [0.0, 1.0], lambda m: 0.0, progress=progress)
        shown = "steering sweep" in capsys.readouterr().err
        assert shown == progress


def test_rise_and_fall_measure_from_alpha_zero_and_plot_draws_one_line_each():
    rows = [
        {"alpha": -1.0, "target": 0.0, "a": 0.10, "b": 0.30},
        {"alpha": 0.0, "target": 0.2, "a": 0.20, "b": 0.20},
        {"alpha": 1.0, "target": 0.9, "a": 0.25, "b": 0.20},
    ]
    assert steering.rise_and_fall(rows, "target") == pytest.approx((0.7, 0.2))
    assert steering.rise_and_fall(rows, "a") == pytest.approx((0.05, 0.10))
    assert steering.rise_and_fall(rows, "b") == pytest.approx((0.10, 0.0))
    with pytest.raises(ValueError, match="alpha 0"):
        steering.rise_and_fall(rows[::2], "a")
    ax = steering.plot_draws(rows, {"controls": ["a", "b"]}, ylabel="refused")
    assert ax.get_ylabel() == "refused"
    assert len(ax.lines) == 3  # two draws and the target
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["controls", "target (along d)"]
    plt.close(ax.figure)


def test_steering_gradient_matches_finite_differences(tiny_model, setup):
    tokens, direction = setup
    u = direction / direction.norm()

    def metric(logits):  # a smooth scalar of the last position's logits
        return logits[:, -1, 5].mean() - logits[:, -1, 7].mean()

    with torch.no_grad():
        gradient = steering.steering_gradient(tiny_model, HOOK, tokens, metric)
        eps = 1e-2
        values = []
        for sign in (1.0, -1.0):
            with steering.steered(tiny_model, HOOK, u, sign * eps):
                values.append(float(metric(tiny_model(tokens))))
    finite = (values[0] - values[1]) / (2 * eps)
    assert gradient.shape == (tiny_model.cfg.d_model,)
    assert float(gradient @ u) == pytest.approx(finite, rel=2e-2, abs=1e-3)
    # pushing only at position 3 has its own, different gradient
    at_3 = steering.steering_gradient(tiny_model, HOOK, tokens, metric, positions=[3])
    assert not torch.allclose(at_3, gradient)
