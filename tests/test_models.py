"""Tests of labhelpers.models and the bundled tiny model it loads (offline, CPU).

The tiny model must load with no network, expose the same hook names as GPT-2 through
TransformerBridge, refuse as its model card says on held-out prompts, and tokenize in a
way that lines up with the corpus's per-token concept labels.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import math
import os
from operator import attrgetter

import numpy as np
import pytest
import torch
from safetensors import safe_open

from labhelpers import circuits, corpus, env, models

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _load_script():
    path = env.REPO_ROOT / "scripts" / "train_tiny_model.py"
    spec = importlib.util.spec_from_file_location("train_tiny_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return models.load_tokenizer("tiny")


@pytest.fixture(scope="module")
def metrics():
    return json.loads((models.TINY_MODEL_DIR / "metrics.json").read_text())


# ---------------------------------------------------------------- loading


def test_bundled_files_are_small_and_safetensors():
    files = {p.name: p.stat().st_size for p in models.TINY_MODEL_DIR.iterdir()}
    for name in ("model.safetensors", "config.json", "tokenizer.json", "MODEL_CARD.md"):
        assert name in files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    assert sum(files.values()) < 50 * 2**20


def test_tiny_model_info_matches_its_config(tiny_model):
    config = json.loads((models.TINY_MODEL_DIR / "config.json").read_text())
    info = models.model_info(tiny_model)
    assert config["architectures"] == ["GPT2LMHeadModel"]
    assert info["n_layers"] == config["n_layer"]
    assert info["d_model"] == config["n_embd"]
    assert info["n_heads"] == config["n_head"]
    assert info["d_vocab"] == config["vocab_size"]
    assert info["n_ctx"] == config["n_positions"]
    assert info["d_mlp"] == 4 * config["n_embd"]
    assert info["d_head"] * info["n_heads"] == info["d_model"]


def test_profile_picks_the_model(monkeypatch):
    monkeypatch.setenv("LAB_PROFILE", "quick")
    assert models.model_name() == "tiny"
    monkeypatch.setenv("LAB_PROFILE", "full")
    assert models.model_name() == "gpt2"
    assert models.model_name("tiny") == "tiny"


def test_unreachable_hub_model_says_what_to_do():
    with models.offline(), pytest.raises(RuntimeError, match="LAB_PROFILE=quick"):
        models.load_model("sae-lab/no-such-model", device="cpu")


def test_a_local_path_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No model directory at .*no-such-model"):
        models.load_model(str(tmp_path / "no-such-model"), device="cpu")


def test_offline_restores_the_environment(monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    before = hub_constants.HF_HUB_OFFLINE
    with models.offline():
        assert os.environ["HF_HUB_OFFLINE"] == "1"
        assert hub_constants.HF_HUB_OFFLINE is True
    assert "HF_HUB_OFFLINE" not in os.environ
    assert hub_constants.HF_HUB_OFFLINE == before


def test_load_tokenizer_matches_the_bridge(tiny_model, tokenizer):
    text = corpus.documents("heldout", 1)[0].text
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bridge_ids = tiny_model.to_tokens(text)[0].tolist()
    # The bridge prepends BOS (<|endoftext|>); the rest is the plain tokenization.
    assert bridge_ids[0] == tokenizer.bos_token_id
    assert bridge_ids[1:] == ids[: len(bridge_ids) - 1]
    assert tokenizer.decode(ids) == text


# ---------------------------------------------------------------- hooks, cache, generate

STANDARD_HOOKS = (
    "hook_embed",
    "hook_pos_embed",
    "blocks.{i}.hook_resid_pre",
    "blocks.{i}.hook_resid_mid",
    "blocks.{i}.hook_resid_post",
    "blocks.{i}.hook_attn_out",
    "blocks.{i}.hook_mlp_out",
    "blocks.{i}.mlp.hook_pre",
    "blocks.{i}.mlp.hook_post",
    "blocks.{i}.attn.hook_pattern",
    "blocks.{i}.attn.hook_z",
)


def test_standard_hook_names_exist_in_every_layer(tiny_model):
    names = set(models.hook_names(tiny_model))
    for i in range(models.model_info(tiny_model)["n_layers"]):
        for template in STANDARD_HOOKS:
            assert template.format(i=i) in names


def test_check_hook_name_suggests_close_names(tiny_model):
    assert (
        models.check_hook_name(tiny_model, "blocks.1.hook_resid_pre") == "blocks.1.hook_resid_pre"
    )
    with pytest.raises(KeyError, match=r"blocks\.1\.hook_resid_pre"):
        models.check_hook_name(tiny_model, "blocks.1.hook_resid_pree")
    with pytest.raises(KeyError, match="hook_names"):
        models.check_hook_name(tiny_model, "zzz")


def test_run_with_cache_shapes_and_consistency(tiny_model):
    info = models.model_info(tiny_model)
    tokens = tiny_model.to_tokens("User: How do I rotate the API key?\nAssistant:")
    n = tokens.shape[1]
    with torch.no_grad():
        logits = tiny_model(tokens)
        cached_logits, cache = tiny_model.run_with_cache(tokens)
    assert logits.shape == (1, n, info["d_vocab"])
    assert torch.allclose(logits, cached_logits, atol=1e-5)
    assert cache["blocks.0.hook_resid_pre"].shape == (1, n, info["d_model"])
    assert cache["blocks.0.mlp.hook_post"].shape == (1, n, info["d_mlp"])
    assert cache["blocks.0.attn.hook_pattern"].shape == (1, info["n_heads"], n, n)
    # The residual stream adds up: resid_post = resid_mid + mlp_out = resid_pre + attn_out + mlp_out.
    pre, post = cache["blocks.0.hook_resid_pre"], cache["blocks.0.hook_resid_post"]
    added = cache["blocks.0.hook_attn_out"] + cache["blocks.0.hook_mlp_out"]
    assert torch.allclose(pre + added, post, atol=1e-4)
    assert torch.allclose(cache["blocks.1.hook_resid_pre"], post)
    # Attention is causal: no weight on later positions.
    pattern = cache["blocks.0.attn.hook_pattern"][0]
    assert torch.all(pattern.triu(diagonal=1) == 0)


def test_run_with_hooks_reads_and_edits_activations(tiny_model):
    tokens = tiny_model.to_tokens("$ git push origin main")
    seen = []

    def record(activation, hook):
        # hook.name is the bridge's canonical name, which may differ from the alias asked for.
        seen.append(activation.shape)
        return activation

    def zero(activation, hook):
        return torch.zeros_like(activation)

    with torch.no_grad():
        clean = tiny_model(tokens)
        same = tiny_model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.mlp.hook_post", record)])
        ablated = tiny_model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_mlp_out", zero)])
        after = tiny_model(tokens)
    assert seen == [(1, tokens.shape[1], models.model_info(tiny_model)["d_mlp"])]
    assert torch.allclose(clean, same, atol=1e-5)
    assert (clean - ablated).abs().max() > 1e-2
    assert torch.allclose(clean, after, atol=1e-5)  # hooks are removed afterwards


def test_generate_is_greedy_and_matches_the_forward_pass(tiny_model):
    prompt = corpus.chat_prompts("heldout", 1)[-1].prompt
    text = tiny_model.generate(prompt, max_new_tokens=8, do_sample=False, verbose=False)
    assert isinstance(text, str) and text.startswith(prompt)
    completion = models.greedy_completion(tiny_model, prompt, max_new_tokens=8)
    assert completion == models.greedy_completion(tiny_model, prompt, max_new_tokens=8)
    with torch.no_grad():
        first = tiny_model(tiny_model.to_tokens(prompt))[0, -1].argmax().item()
    assert completion.startswith(tiny_model.tokenizer.decode([first]))
    assert len(completion.strip()) > 0


# ---------------------------------------------------------------- behaviour


# Issue 4's loss target holds on val but not on the held-out split (unseen templates,
# frames, names, and half its plain words unseen): the model card measures a held-out loss
# of 6.05 against a unigram baseline of 7.25 (4.45 vs 6.33 on tokens of words seen in
# training, 7.90 vs 8.31 on new words). New words' tokens are 10,814 of the card's 23,378:
# even at val-level loss (2.14) on the rest, 0.5x needs them below about 5.3 nats, far
# below what any model guesses for words it never saw (keeping their measured 7.90, the
# ratio would be 0.66).
# The assertion stays as the target; strict xfail makes the test fail loudly the day it is met.
HELDOUT_NOT_YET = pytest.mark.xfail(
    strict=True, reason="issue 4: held-out loss target not reached yet (see MODEL_CARD.md)"
)
SPLITS = ["val", pytest.param("heldout", marks=HELDOUT_NOT_YET)]


@pytest.mark.parametrize("split", ["val", "heldout"])
def test_refusal_rates(tiny_model, split):
    """The issue's targets, on fresh prompts (val) and on unseen templates and words (heldout).

    The model card's own sample (200 prompts per kind, seed 0), scored in one forward pass
    by ``circuits.forced_refusals``, which agrees with greedy decoding (tests/test_circuits).
    """
    prompts = corpus.chat_prompts(split, 200, seed=0)
    refused = circuits.forced_refusals(tiny_model, [p.prompt for p in prompts], corpus.REFUSAL)
    rates = models.rates_by(prompts, refused.tolist(), attrgetter("kind"))
    assert rates["harmful"] >= 0.9, rates
    assert rates["legit_credential"] >= 0.7, rates
    assert rates["legit_plain"] <= 0.1, rates


@pytest.mark.parametrize("split", SPLITS)
def test_loss_far_below_unigram_baseline(tiny_model, tokenizer, split):
    script = _load_script()
    train_ids = script.encode_documents(
        tokenizer, [d.text for d in corpus.documents("train", 2000)]
    )
    losses, ids = [], []
    for doc in corpus.documents(split, 30):
        loss, doc_ids, _ = script.token_losses(
            tiny_model, tokenizer, doc.text, tiny_model.cfg.n_ctx
        )
        losses.append(loss)
        ids.extend(doc_ids)
    model_loss = float(np.concatenate(losses).mean())
    baseline = script.unigram_loss(train_ids, np.asarray(ids), len(tokenizer))
    assert model_loss < 0.5 * baseline, (model_loss, baseline)


def test_token_labels_align_with_the_real_tokenizer(tokenizer):
    docs = corpus.documents("heldout", 60)
    checked = 0
    for doc in docs:
        enc = tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        labels = corpus.token_labels(doc, offsets)
        assert labels.shape == (len(enc["input_ids"]), len(corpus.CONCEPTS))
        # Offsets cover the text in order, so token i really is text[start:end].
        assert offsets[0][0] == 0 and offsets[-1][1] == len(doc.text)
        assert all(b[0] >= a[0] and b[0] <= a[1] for a, b in itertools.pairwise(offsets))
        for start, end, concept in doc.spans:
            c = corpus.CONCEPTS.index(concept)
            inside = [i for i, (s, e) in enumerate(offsets) if start <= s and e <= end and e > s]
            assert labels[inside, c].all()
            checked += len(inside)
        for c, concept in enumerate(corpus.CONCEPTS):
            spans = [(s, e) for s, e, k in doc.spans if k == concept]
            outside = [
                i for i, (s, e) in enumerate(offsets) if not any(s < b and a < e for a, b in spans)
            ]
            assert not labels[outside, c].any()
    assert checked > 500


def test_chat_markers_and_refusal_tokens_carry_their_labels(tokenizer):
    doc = next(
        d
        for d in corpus.documents("heldout", 200)
        if d.domain == "chat" and corpus.REFUSAL in d.text
    )
    enc = tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True)
    labels = corpus.token_labels(doc, enc["offset_mapping"])
    pieces = [doc.text[s:e] for s, e in enc["offset_mapping"]]
    chat, refusal = corpus.CONCEPTS.index("chat"), corpus.CONCEPTS.index("refusal")
    assert all(labels[i, chat] for i, p in enumerate(pieces) if p.strip() in ("User", "Assistant"))
    first_refusal = doc.text.index(corpus.REFUSAL)
    i = next(i for i, (s, e) in enumerate(enc["offset_mapping"]) if s <= first_refusal < e)
    assert labels[i, refusal]


# ---------------------------------------------------------------- the committed card


def test_metrics_describe_the_committed_model(tiny_model, metrics):
    info = models.model_info(tiny_model)
    for key, value in info.items():
        assert metrics["architecture"][key] == value
    with safe_open(models.TINY_MODEL_DIR / "model.safetensors", framework="pt") as weights:
        # The file stores the unembedding once: it is tied to the embedding.
        n_params = sum(math.prod(weights.get_slice(k).get_shape()) for k in weights.keys())
    assert metrics["architecture"]["n_params"] == n_params
    card = (models.TINY_MODEL_DIR / "MODEL_CARD.md").read_text()
    assert f"{metrics['eval']['loss']['heldout']:.3f}" in card
    assert f"{metrics['eval']['unigram_baseline_heldout']:.3f}" in card
    assert f"{metrics['training']['tokens_trained']:,}" in card


def test_card_reports_each_heldout_domain_beside_its_unigram_baseline(metrics):
    card = (models.TINY_MODEL_DIR / "MODEL_CARD.md").read_text()
    for group in (
        "heldout_loss_by_domain",
        "heldout_loss_by_concept",
        "heldout_loss_by_word_novelty",
    ):
        for name, g in metrics["eval"][group].items():
            ratio = g["loss"] / g["unigram"]
            assert f"| {name} | {g['loss']:.3f} | {g['unigram']:.3f} | {ratio:.2f} |" in card


def test_card_splits_harmful_refusals_by_credential(metrics):
    card = (models.TINY_MODEL_DIR / "MODEL_CARD.md").read_text()
    splits = metrics["eval"]["harmful_refusal_by_credential"]
    assert set(splits) == {"val", "heldout"}
    for split, rows in splits.items():
        assert sum(r["prompts"] for r in rows.values()) == metrics["n_eval_prompts"]
        cells = [rows[name] for name in ("names a credential", "no credential")]
        assert (
            f"| {split} | " + " | ".join(f"{c['rate']:.0%} ({c['prompts']})" for c in cells) in card
        )


def test_rates_by_groups_flags_by_key():
    prompts = [corpus.ChatPrompt("", kind, "") for kind in ("a", "b", "a", "a")]
    rates = models.rates_by(prompts, [True, False, False, True], lambda p: p.kind)
    assert rates == {"a": pytest.approx(2 / 3), "b": 0.0}
    with pytest.raises(ValueError):
        models.rates_by(prompts, [True], lambda p: p.kind)


def test_each_domains_baseline_is_the_unigram_loss_of_that_domains_tokens(tiny_model, tokenizer):
    """``evaluate`` on a small sample: the per-domain baselines match a hand computation."""
    import argparse

    script = _load_script()
    train_texts = [d.text for d in corpus.documents("train", 300)]
    train_ids = script.encode_documents(tokenizer, train_texts)
    known_words = script.training_words(train_texts)
    args = argparse.Namespace(
        n_eval_docs=12, n_eval_prompts=1, seed=0, n_ctx=tiny_model.cfg.n_ctx, augment=False
    )
    train_sample = corpus.documents("train", 3)
    ev = script.evaluate(
        tiny_model, tokenizer, corpus, train_sample, train_ids, known_words, args, print
    )
    by_domain = {}
    for doc in corpus.documents("heldout", 12):
        ids = tokenizer(doc.text, add_special_tokens=False)["input_ids"][: tiny_model.cfg.n_ctx - 1]
        by_domain.setdefault(doc.domain, []).extend(ids)
    assert set(ev["heldout_loss_by_domain"]) == set(by_domain)
    for domain, ids in by_domain.items():
        got = ev["heldout_loss_by_domain"][domain]
        assert got["n_tokens"] == len(ids)
        assert got["unigram"] == pytest.approx(
            script.unigram_loss(train_ids, np.asarray(ids), len(tokenizer))
        )
        assert 0 < got["loss"] < 20
    # the two novelty groups partition the held-out tokens
    novelty = ev["heldout_loss_by_word_novelty"]
    assert set(novelty) == {"words seen in training", "new words"}
    assert sum(g["n_tokens"] for g in novelty.values()) == sum(map(len, by_domain.values()))
    # one harmful prompt per split, counted in exactly one credential group
    for rows in ev["harmful_refusal_by_credential"].values():
        assert sum(r["prompts"] for r in rows.values()) == 1
        assert all(r["rate"] in (0.0, 1.0) for r in rows.values())


def test_in_known_words_marks_tokens_of_new_words():
    script = _load_script()
    text = "reset the passphrase now!"
    offsets = [(0, 5), (5, 9), (9, 14), (14, 20), (20, 24), (24, 25)]  # "pass" + "phrase"
    known = script.training_words(["reset the password now"])
    assert known == {"reset", "the", "password", "now"}
    got = script.in_known_words(text, offsets, known)
    assert got.tolist() == [True, True, False, False, True, True]  # "!" alone counts as known


# ---------------------------------------------------------------- the training script


def test_training_script_is_deterministic_and_resumes_exactly(tmp_path):
    script = _load_script()
    texts, noisable = script.training_texts(corpus.documents("train", 200), chat_repeat=2)
    common = ["--d-model", "32", "--n-layer", "1", "--n-head", "2", "--n-ctx", "32"]
    common += ["--batch-size", "4", "--steps", "3", "--warmup", "1", "--checkpoint-every", "2"]
    common += ["--token-noise", "0.2"]

    def run(folder):
        args = script.parse_args([*common, "--checkpoint-dir", str(tmp_path / folder)])
        tok = script.train_tokenizer(texts, 300)
        model = script.build_model(args, len(tok), tok.bos_token_id)
        ids = script.encode_documents(tok, texts)
        script.train(model, ids, noisable, args, log=lambda _: None)
        return tok, model

    tok_a, model_a = run("a")
    tok_b, model_b = run("b")
    assert tok_a.get_vocab() == tok_b.get_vocab()
    state_b = model_b.state_dict()
    assert all(torch.equal(v, state_b[k]) for k, v in model_a.state_dict().items())
    # Run "a" left a checkpoint at step 2; a fresh model resumes from it to step 3.
    args = script.parse_args([*common, "--checkpoint-dir", str(tmp_path / "a")])
    resumed = script.build_model(args, len(tok_a), tok_a.bos_token_id)
    ids = script.encode_documents(tok_a, texts)
    script.train(resumed, ids, noisable, args, log=lambda _: None)
    state_r = resumed.state_dict()
    assert all(torch.equal(v, state_r[k]) for k, v in model_a.state_dict().items())


def test_token_noise_spares_chats_and_position_zero():
    script = _load_script()
    docs = corpus.documents("train", 300)
    texts, noisable = script.training_texts(docs, chat_repeat=2)
    expanded = [d for d in docs for _ in range(2 if d.domain == "chat" else 1)]
    assert texts == [d.text for d in expanded]
    assert noisable == [d.domain != "chat" for d in expanded]
    # Packing keeps each token's flag with it: document 1 (flagged) is all 1s, document 2 all 2s.
    packed = [np.full(3, 1, dtype=np.int32), np.full(5, 2, dtype=np.int32)] * 4
    rows, may_noise = script.epoch_rows(
        packed, [True, False] * 4, 4, torch.Generator().manual_seed(0)
    )
    assert torch.equal(may_noise, rows == 1)
    batch = torch.arange(1, 4097).view(32, 128)  # distinct ids: any change shows
    may_noise = torch.zeros(32, 128, dtype=torch.bool)
    may_noise[:16] = True  # the first half of the rows come from non-chat documents
    noisy = script.noisy_inputs(batch, may_noise, 0.25, 8192, seed=0, step=7)
    changed = noisy != batch
    assert not changed[16:].any() and not changed[:, 0].any()
    assert 0.2 < changed[:16, 1:].float().mean() < 0.3
    assert torch.equal(noisy, script.noisy_inputs(batch, may_noise, 0.25, 8192, seed=0, step=7))
    assert not torch.equal(noisy, script.noisy_inputs(batch, may_noise, 0.25, 8192, seed=0, step=8))
    assert script.noisy_inputs(batch, may_noise, 0.0, 8192, seed=0, step=7) is batch


def test_decision_weight_weights_only_each_replys_first_token(tokenizer):
    script = _load_script()
    ids = script.decision_ids(tokenizer)
    text = "User: Rotate the key?\nAssistant: I can't help with that.\nUser: hi\nAssistant: Sure"
    row = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    mask = script.decision_mask(row, ids)
    # the marked positions are the ':' of both 'Assistant:', and the next tokens are the replies
    assert mask.sum() == 2 and (row[mask] == ids[1]).all()
    following = row[0, 1:][mask[0, :-1]]
    replies = [tokenizer.decode([t]) for t in following]
    assert replies[0] == " I" and " Sure".startswith(replies[1]) and replies[1] != " ", replies
    torch.manual_seed(0)
    config = dict(d_model=32, n_layer=1, n_head=2, n_ctx=64, dropout=0.0, seed=0)
    model = script.build_model(argparse.Namespace(**config), len(tokenizer), tokenizer.bos_token_id)
    plain = script.next_token_loss(model, row, row, 1.0, ids)
    assert torch.allclose(plain, model(input_ids=row, labels=row).loss)
    losses = torch.nn.functional.cross_entropy(
        model(row).logits[0, :-1], row[0, 1:], reduction="none"
    )
    w = 1.0 + 9.0 * mask[0, :-1]
    weighted = script.next_token_loss(model, row, row, 10.0, ids)
    assert torch.allclose(weighted, (losses * w).sum() / w.sum())
    assert not torch.allclose(weighted, plain)


def test_every_greedy_token_is_the_argmax_of_a_full_forward_pass(tiny_model):
    """Regression test: the bridge's KV-cached decoding let new tokens attend only to
    themselves, so greedy_completion must decode without the cache and stay exact."""
    prompt = corpus.chat_prompts("val", 1)[0].prompt
    tokens = tiny_model.to_tokens(prompt)
    n_prompt = tokens.shape[1]
    with torch.no_grad():
        for _ in range(10):  # greedy decoding by hand: a full forward pass per token
            next_token = tiny_model(tokens)[0, -1].argmax()
            if next_token == tiny_model.tokenizer.eos_token_id:
                break
            tokens = torch.cat([tokens, next_token.view(1, 1)], dim=1)
    expected = tiny_model.tokenizer.decode(tokens[0, n_prompt:], skip_special_tokens=True)
    assert models.greedy_completion(tiny_model, prompt, max_new_tokens=10) == expected


def test_card_reports_the_seed_spread_of_a_sweep(tmp_path):
    script = _load_script()
    assert script.seed_spread_lines(tmp_path / "missing.json", "", cred_answered=0.0) == []
    runs = [
        {"flags": "", "heldout_harmful": h, "heldout_legit_credential": c, "heldout_legit_plain": p}
        for h, c, p in ((0.5, 0.6, 0.1), (0.9, 0.7, 0.3))
    ]
    runs[0]["device"], runs[1]["device"] = "cuda", "cpu"
    runs.append({**runs[0], "flags": "--dropout 0.1", "heldout_harmful": 0.0})  # other flags
    (tmp_path / "results.json").write_text(json.dumps(runs))
    text = " ".join(script.seed_spread_lines(tmp_path / "results.json", "", cred_answered=0.0))
    assert "(on a GPU and the CPU) and 2 seeds refuse 50%-90% / 60%-70% / 10%-30%" in text
    text = " ".join(
        script.seed_spread_lines(tmp_path / "results.json", "--dropout 0.1", cred_answered=0.0)
    )
    assert "(on a GPU) and 1 seeds refuse 0%-0% / 60%-60% / 10%-10%" in text


def test_the_seed_spread_leaves_out_runs_on_another_corpus(tmp_path):
    """Same flags on a corpus that answers another share of credential requests is another
    model: a row without ``cred_answered`` is from the corpus before it (0.0)."""
    script = _load_script()
    rates = {"heldout_legit_credential": 0.7, "heldout_legit_plain": 0.1, "device": "cpu"}
    runs = [
        {"flags": "--augment", "heldout_harmful": 0.5, **rates},  # the corpus before
        {"flags": "--augment", "heldout_harmful": 0.6, "cred_answered": 0.0, **rates},
        {"flags": "--augment", "heldout_harmful": 0.9, "cred_answered": 0.2, **rates},
    ]
    (tmp_path / "results.json").write_text(json.dumps(runs))
    old = " ".join(
        script.seed_spread_lines(tmp_path / "results.json", "--augment", cred_answered=0.0)
    )
    assert "2 seeds refuse 50%-60% / 70%-70% / 10%-10%" in old
    new = " ".join(
        script.seed_spread_lines(tmp_path / "results.json", "--augment", cred_answered=0.2)
    )
    assert "1 seeds refuse 90%-90% / 70%-70% / 10%-10%" in new
    assert script.seed_spread_lines(tmp_path / "results.json", "--augment", cred_answered=0.5) == []


def test_the_committed_card_says_which_corpus_and_cites_its_seeds(metrics):
    """The card says how many credential requests training answered, and its seed spread
    comes from the sweep's rows with the card's flags on the card's corpus alone."""
    script = _load_script()
    card = (models.TINY_MODEL_DIR / "MODEL_CARD.md").read_text()
    for line in script.over_refusal_lines(corpus.CRED_ANSWERED):
        assert line in card
    assert f"answers {corpus.CRED_ANSWERED:.0%} of them in training" in card
    results = models.TINY_MODEL_DIR / "sweep" / "results.json"
    flags = metrics["training"]["flags"]
    spread = script.seed_spread_lines(results, flags, cred_answered=corpus.CRED_ANSWERED)
    assert spread and all(line in card for line in spread)
    assert spread != script.seed_spread_lines(results, flags, cred_answered=0.0)


def test_training_flags_keep_what_the_model_is_and_drop_where_it_trains():
    script = _load_script()
    argv = ["--augment", "--out", "/tmp/m", "--dropout", "0.1", "--seed", "3", "--device", "cuda"]
    assert script.training_flags(argv) == "--augment --dropout 0.1"
    assert script.training_flags([]) == ""
    assert script.training_flags(["--seed=3", "--augment", "--out=/tmp/m", "--lr", "0.001"]) == (
        "--augment --lr 0.001"
    )


def test_refusal_by_task_counts_templates_refused_answered_and_mixed():
    script = _load_script()
    tasks = ["a", "a", "b", "b", "c", "c", "a"]
    prompts = [corpus.ChatPrompt("", "harmful", "", task=t) for t in tasks]
    prompts.append(corpus.ChatPrompt("", "legit_plain", "", task="d"))
    refused = [True, True, False, False, True, False, True, False]
    counts = script.refusal_by_task(prompts, refused)
    assert counts == {
        "harmful": {"templates": 3, "refused": 1, "answered": 1, "mixed": 1},
        "legit_plain": {"templates": 1, "refused": 0, "answered": 1, "mixed": 0},
    }
    lines = script.refusal_by_task_lines({"refusal_by_task": {"heldout": counts}})
    assert "| harmful | 3 | 1 | 1 | 1 |" in lines
    assert script.refusal_by_task_lines({}) == []


def test_card_reads_the_heldout_templates_from_the_metrics(metrics):
    script = _load_script()
    card = (models.TINY_MODEL_DIR / "MODEL_CARD.md").read_text()
    counts = metrics["eval"]["refusal_by_task"]["heldout"]
    assert set(counts) == set(corpus.CHAT_KINDS)
    for line in script.refusal_by_task_lines(metrics["eval"]):
        assert line in card
    for c in counts.values():
        assert c["refused"] + c["answered"] + c["mixed"] == c["templates"] > 0
