"""Reading tools on hand-built activations with known answers (and on the tiny model)."""

import html.parser

import torch

from labhelpers import features as F
from labhelpers.sae import SAEConfig, TopKSAE


def known_acts():
    acts = torch.zeros(3, 5)
    acts[0, 2], acts[1, 4], acts[2, 1], acts[2, 3] = 0.5, 3.0, 1.0, 2.0
    return acts


def test_top_examples_are_the_largest_in_order():
    top = F.top_examples(known_acts(), k=3)
    assert [(e.row, e.position, e.activation) for e in top] == [
        (1, 4, 3.0),
        (2, 3, 2.0),
        (2, 1, 1.0),
    ]
    assert len(F.top_examples(known_acts(), k=10)) == 4  # only firing tokens count


def test_quantile_examples_cover_the_whole_range():
    acts = torch.arange(1, 101, dtype=torch.float32).reshape(10, 10)
    acts[0, :5] = 0
    bins = F.quantile_examples(acts, n_bins=4, per_bin=2, seed=0)
    assert len(bins) == 4 and all(len(v) == 2 for v in bins.values())
    lows = [min(e.activation for e in v) for v in bins.values()]
    assert lows == sorted(lows) and min(lows) < 30 and max(lows) > 75
    assert F.quantile_examples(torch.zeros(2, 2)) == {}


def test_render_text_marks_the_token():
    text = F.render_text(["a", "b", "\n", "d"], [0.0, 2.5, 0.0, 0.1], position=1, left=1, right=1)
    assert text == "a[[b]](2.50)⏎"


class _Collector(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.text, self.tags = "", []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text += data


def test_render_html_escapes_and_shades():
    out = F.render_html(["<b>", "ok"], [1.0, 0.0], position=0)
    parser = _Collector()
    parser.feed(out)
    assert parser.text == "<b>ok" and parser.tags == ["div", "span", "span"]
    assert "rgba(255,140,0,1.00)" in out and "border:1px solid" in out


def test_decoder_neighbours_find_a_planted_near_duplicate():
    sae = TopKSAE(SAEConfig(d_in=16, d_sae=32, k=4))
    with torch.no_grad():
        sae.W_dec[7] = sae.W_dec[3] + 0.05 * sae.W_dec[9]
    (first, cos), *_ = F.decoder_neighbours(sae, 3, k=3)
    assert first == 7 and cos > 0.99
    assert all(i != 3 for i, _ in F.decoder_neighbours(sae, 3, k=31))


def test_histogram_reports_the_firing_rate():
    ax = F.plot_histogram(known_acts())
    assert "fires on 26.67% of tokens" in ax.get_legend().get_texts()[0].get_text()


def test_unit_activations_line_up_with_harvest(tiny_model):
    from labhelpers import activations, corpus

    torch.manual_seed(0)
    sae = TopKSAE(SAEConfig(d_in=tiny_model.cfg.d_model, d_sae=64, k=4))
    tokens, _ = corpus.labelled_rows("val", tiny_model.tokenizer, 16, 3)
    tokens = torch.tensor(tokens)
    units = F.unit_activations(
        tiny_model, sae, "blocks.2.hook_resid_pre", "blocks.1.mlp.hook_post", tokens, batch_size=2
    )
    (resid,) = activations.harvest(tiny_model, "blocks.2.hook_resid_pre", [tokens])
    (neurons,) = activations.harvest(tiny_model, "blocks.1.mlp.hook_post", [tokens])
    n = 3 * 15  # BOS dropped
    assert units["SAE latent"].shape == (n, 64)
    torch.testing.assert_close(units["SAE latent"], sae.encode(resid), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(units["MLP neuron"], neurons, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(units["residual basis"], torch.cat([resid, -resid], 1))


def test_plot_concept_scores_draws_one_bar_per_kind_and_concept():
    rows = [{"concept": c, "f1": f} for c, f in (("a", 0.9), ("b", 0.3), ("c", 0.5))]
    ax = F.plot_concept_scores({"SAE latent": rows, "MLP neuron": rows[::-1]})
    assert len(ax.patches) == 6
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert sorted(p.get_height() for p in ax.patches) == [0.3, 0.3, 0.5, 0.5, 0.9, 0.9]


def test_token_matches_follows_the_rule(tiny_model):
    tokens = tiny_model.to_tokens("reset my password now")
    strings = F.token_strings(tiny_model, tokens[0])
    marks = F.token_matches(tiny_model, tokens, r"pass|word")[0].tolist()
    assert marks == [("pass" in s or "word" in s) for s in strings] and any(marks)


def test_firing_rates_match_the_full_tensor(tiny_model):
    from labhelpers import corpus

    torch.manual_seed(0)
    sae = TopKSAE(SAEConfig(d_in=tiny_model.cfg.d_model, d_sae=32, k=3))
    tokens = torch.tensor(corpus.labelled_rows("val", tiny_model.tokenizer, 12, 5)[0])
    z = F.latent_acts(tiny_model, sae, "blocks.1.hook_resid_pre", tokens)[:, 1:]
    rates = F.firing_rates(tiny_model, sae, "blocks.1.hook_resid_pre", tokens, batch_size=2)
    torch.testing.assert_close(rates, (z > 0).float().mean((0, 1)))
    assert abs(float(rates.sum()) - 3.0) < 1e-5  # TopK: exactly k latents per token


def test_logit_effects_match_the_model_with_the_final_scale_held(tiny_model):
    from labhelpers import splice

    torch.manual_seed(0)
    sae = TopKSAE(SAEConfig(d_in=tiny_model.cfg.d_model, d_sae=8, k=2))
    # A large mean component: the old W_dec[f] @ W_U, with no centring and no LayerNorm
    # weight, gets the ranking wrong here (and every value off by about 1.8x on this model).
    direction = torch.randn(tiny_model.cfg.d_model) + 3.0
    with torch.no_grad():
        sae.W_dec[5] = direction
    tokens = tiny_model.to_tokens("reset my password now")
    clean, cache = tiny_model.run_with_cache(tokens)

    def add(act, hook=None):
        act = act.clone()
        act[:, -1] += direction
        return act

    hold = splice.hold_hooks(cache, ["ln_final.hook_scale"])
    moved = tiny_model.run_with_hooks(tokens, fwd_hooks=[("ln_final.hook_in", add), *hold])
    real = (moved - clean)[0, -1] * cache["ln_final.hook_scale"][0, -1]  # per unit of 1 / sigma
    real -= real.mean()
    effects = F.logit_effects(tiny_model, sae, 5, k=5)
    promoted = real.topk(5)
    assert [t for t, _ in effects["promoted"]] == F.token_strings(tiny_model, promoted.indices)
    torch.testing.assert_close(torch.tensor([v for _, v in effects["promoted"]]), promoted.values)
    suppressed = (-real).topk(5)
    assert [t for t, _ in effects["suppressed"]] == F.token_strings(tiny_model, suppressed.indices)


def test_latent_acts_read_the_model_in_float32(tiny_model, monkeypatch):
    from labhelpers import activations

    def no_autocast(device: str):
        raise AssertionError("latent_acts must not autocast: splicing and ablation run in fp32")

    monkeypatch.setattr(activations, "_autocast", no_autocast)
    sae = TopKSAE(SAEConfig(d_in=tiny_model.cfg.d_model, d_sae=16, k=2))
    tokens = tiny_model.to_tokens("reset my password now")
    assert F.latent_acts(tiny_model, sae, "blocks.1.hook_resid_pre", tokens).shape[-1] == 16
