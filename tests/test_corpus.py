"""Tests of labhelpers.corpus: determinism, label alignment, split disjointness, coverage."""

from __future__ import annotations

import hashlib
import os
import random
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from labhelpers import corpus, corpus_words

# sha256 of corpus_text("train", 300, seed=0). Changing a template or word list changes
# it on purpose: update it, and retrain the tiny model, which was trained on the old text.
EXPECTED_SHA256 = "8f461a0d1c77e8ee11e858be8177fb3d826e492b7d511f7cb1afc86d794fa497"

HEBREW = re.compile(r"[\u0590-\u05FF]")
SLOT_OR_TAG = re.compile(r"\{\{|\}\}|\{[a-z_0-9]+(?:@\w+)?\}|</?[a-z]+>")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@pytest.fixture(scope="module")
def train_docs() -> list[corpus.Document]:
    return corpus.documents("train", 3000)


@pytest.fixture(scope="module")
def heldout_docs() -> list[corpus.Document]:
    return corpus.documents("heldout", 1500)


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes() -> None:
    first = corpus.corpus_text("train", 300, seed=0)
    second = corpus.corpus_text("train", 300, seed=0)
    assert _sha(first) == _sha(second)
    assert _sha(first) == EXPECTED_SHA256


def test_bytes_do_not_depend_on_the_python_hash_seed() -> None:
    """Generation never iterates over an unordered set, so every process makes the same text."""
    code = (
        "import hashlib; from labhelpers import corpus; "
        "print(hashlib.sha256(corpus.corpus_text('val', 200).encode()).hexdigest())"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for hash_seed in ("1", "2")
    }
    assert len(outputs) == 1
    assert outputs == {_sha(corpus.corpus_text("val", 200)) + "\n"}


def test_seeds_and_splits_differ() -> None:
    train = corpus.corpus_text("train", 100, seed=0)
    assert corpus.corpus_text("train", 100, seed=1) != train
    assert corpus.corpus_text("val", 100, seed=0) != train
    assert corpus.corpus_text("heldout", 100, seed=0) != train


def test_documents_are_a_prefix_of_longer_runs() -> None:
    assert corpus.documents("val", 50, seed=3) == corpus.documents("val", 120, seed=3)[:50]


def test_corpus_text_joins_documents() -> None:
    docs = corpus.documents("train", 20)
    assert corpus.corpus_text("train", 20, sep="<|sep|>") == "<|sep|>".join(d.text for d in docs)


def test_unknown_split_raises() -> None:
    with pytest.raises(ValueError, match="split"):
        corpus.documents("test", 3)


# ----------------------------------------------------------------------------- labels


def test_spans_are_valid_and_tight(train_docs: list[corpus.Document]) -> None:
    for doc in train_docs:
        assert doc.domain in corpus.DOMAINS
        for start, end, concept in doc.spans:
            assert concept in corpus.CONCEPTS
            assert 0 <= start < end <= len(doc.text), (doc.text, start, end, concept)
            piece = doc.text[start:end]
            assert piece == piece.strip(), (concept, piece)  # no stray whitespace at the edges


def test_spans_land_on_what_was_planted(train_docs: list[corpus.Document]) -> None:
    """Each concept's spans contain what that concept plants, and nothing else."""
    seen = set()
    for doc in train_docs:
        for start, end, concept in doc.spans:
            piece = doc.text[start:end]
            seen.add(concept)
            if concept == "refusal":
                assert piece == corpus.REFUSAL
            elif concept == "chat":
                assert piece in ("User:", "Assistant:")
            elif concept == "dna":
                assert re.fullmatch(r"[ACGT\n]+", piece), piece
            elif concept == "number":
                assert re.search(r"\d", piece), piece
            elif concept == "hebrew":
                assert HEBREW.search(piece) and not re.search(r"[A-Za-z]", piece), piece
    assert seen == set(corpus.CONCEPTS)


def test_char_labels_match_spans() -> None:
    doc = corpus.Document("ab secret cd", ((3, 9, "credential"), (0, 2, "prose")), "test")
    labels = corpus.char_labels(doc)
    assert labels.shape == (len(doc.text), len(corpus.CONCEPTS)) and labels.dtype == bool
    cred = corpus.CONCEPTS.index("credential")
    assert labels[:, cred].tolist() == [i in range(3, 9) for i in range(len(doc.text))]
    assert labels.sum() == 6 + 2


def test_token_labels_any_character_rule() -> None:
    doc = corpus.Document("ab secret cd", ((3, 9, "credential"),), "test")
    # tokens "ab", " sec", "ret", " cd", and an empty special token
    offsets = [(0, 2), (2, 6), (6, 9), (9, 12), (12, 12)]
    cred = corpus.CONCEPTS.index("credential")
    labels = corpus.token_labels(doc, offsets)
    assert labels.shape == (5, len(corpus.CONCEPTS))
    assert labels[:, cred].tolist() == [False, True, True, False, False]
    assert labels.sum() == 2
    assert corpus.token_labels(doc, []).shape == (0, len(corpus.CONCEPTS))


def test_token_labels_agree_with_brute_force(train_docs: list[corpus.Document]) -> None:
    for doc in train_docs[:200]:
        offsets = [m.span() for m in re.finditer(r"\w+|\s+|[^\w\s]", doc.text)]
        chars = corpus.char_labels(doc)
        expected = np.array([chars[s:e].any(axis=0) for s, e in offsets])
        assert np.array_equal(corpus.token_labels(doc, offsets), expected)


def test_token_labels_with_a_byte_level_bpe(train_docs: list[corpus.Document]) -> None:
    """The offsets of a real byte-level BPE (as the tiny model uses) map labels onto tokens."""
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator((d.text for d in train_docs[:300]), trainer=trainer)
    refusal = corpus.CONCEPTS.index("refusal")
    for doc in train_docs[:100]:
        enc = tok.encode(doc.text)
        labels = corpus.token_labels(doc, enc.offsets)
        assert labels.shape == (len(enc.ids), len(corpus.CONCEPTS))
        for (s, e), row in zip(enc.offsets, labels):
            assert np.array_equal(row, corpus.char_labels(doc)[s:e].any(axis=0))
        tokens_text = "".join(doc.text[s:e] for (s, e), r in zip(enc.offsets, labels) if r[refusal])
        assert tokens_text.count(corpus.REFUSAL) == sum(c == "refusal" for *_, c in doc.spans)


def test_labelled_rows_pack_like_pack_tokens() -> None:
    """Same rows as activations.token_rows, with each token's labels from its own document."""
    from labhelpers import activations, models

    tok = models.load_tokenizer("tiny")
    tokens, labels = corpus.labelled_rows("val", tok, 48, 30)
    texts = (d.text for d in corpus.iter_documents("val", 1000))
    assert np.array_equal(tokens, activations.token_rows(texts, tok, 48, 30).numpy())
    assert labels.shape == (30, 48, len(corpus.CONCEPTS)) and labels.dtype == bool
    assert not labels[:, 0].any()  # BOS
    assert not labels[tokens == tok.eos_token_id].any()  # EOS between documents
    # The first document's tokens sit at positions 1.. of row 0 with its own labels.
    doc = corpus.documents("val", 1)[0]
    enc = tok(doc.text, add_special_tokens=False, return_offsets_mapping=True)
    n = min(len(enc["input_ids"]), 47)
    assert np.array_equal(labels[0, 1 : 1 + n], corpus.token_labels(doc, enc["offset_mapping"])[:n])
    assert labels.any(axis=(0, 1)).sum() >= 6  # several concepts present in 30 rows


# ----------------------------------------------------------------------------- splits


def _plain_entries(vocab: dict) -> set[str]:
    """The word-list entries that are plain words (no slots or tags) of the split's own lists."""
    out = set()
    for entries in vocab.values():
        if callable(entries):
            continue
        for entry in entries:
            if isinstance(entry, str) and not SLOT_OR_TAG.search(entry):
                out.add(entry)
    return out


def _words_found(words: set[str], text: str) -> set[str]:
    """Which of ``words`` occur in ``text`` as whole words (one regex pass, longest first)."""
    alternation = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return set(re.findall(r"(?<!\w)(?:" + alternation + r")(?!\w)", text))


def test_splits_have_the_same_slots() -> None:
    assert set(corpus_words.TRAIN) == set(corpus_words.HELDOUT)


def test_heldout_words_never_appear_in_train(train_docs: list[corpus.Document]) -> None:
    train_text = "\n".join(d.text for d in train_docs + corpus.documents("val", 1000))
    # Static check on every train string, dynamic check on generated train/val text.
    train_strings = "\n".join(
        e if isinstance(e, str) else "\n".join(e)
        for v in (*corpus_words.TRAIN.values(), *corpus_words.SHARED.values())
        for e in v
    )
    heldout_words = _plain_entries(corpus_words.HELDOUT) - _plain_entries(corpus_words.SHARED)
    assert len(heldout_words) > 100
    assert _words_found(heldout_words, train_strings) == set()
    assert _words_found(heldout_words, train_text) == set()


def test_heldout_templates_never_rendered_in_train(train_docs: list[corpus.Document]) -> None:
    """No train line matches a held-out template (slots as wildcards) with 3+ literal words."""
    train_lines = {line for d in train_docs for line in d.text.split("\n")}
    n_checked = 0
    for slot, entries in corpus_words.HELDOUT.items():
        for entry in entries:
            entry = entry[0] if isinstance(entry, tuple) else entry
            if not SLOT_OR_TAG.search(entry):
                continue  # plain words are covered by the test above
            for line_template in entry.split("\n"):
                pieces = SLOT_OR_TAG.split(line_template)
                if len(re.findall(r"[^\W\d_]{2,}", " ".join(pieces))) < 3:
                    continue  # "{a} the {b}" has too little of its own to find
                longest = max(pieces, key=len)
                pattern = re.compile("[^\n]{1,80}?".join(re.escape(p) for p in pieces))
                hits = [line for line in train_lines if longest in line and pattern.search(line)]
                assert not hits, (slot, line_template, hits[:3])
                n_checked += 1
    assert n_checked > 50


def test_heldout_uses_no_train_names(heldout_docs: list[corpus.Document]) -> None:
    text = "\n".join(d.text for d in heldout_docs)
    # Held-out borrows train's credential words on purpose; "auth" in "auth token" is one.
    for cred in sorted(corpus_words.TRAIN["cred"], key=len, reverse=True):
        text = text.replace(cred, "")
    for slot in ("name", "company", "service", "file", "gene", "organism", "place"):
        assert _words_found(set(corpus_words.TRAIN[slot]), text) == set(), slot


@pytest.mark.parametrize("split", corpus.SPLITS)
def test_every_concept_and_domain_in_every_split(split: str) -> None:
    docs = corpus.documents(split, 600)
    present = {c for d in docs for *_, c in d.spans}
    assert present == set(corpus.CONCEPTS)
    assert {d.domain for d in docs} == set(corpus.DOMAINS)


# ----------------------------------------------------------------------------- chat rule


def _exchanges(doc: corpus.Document):
    """(request_span, response_span) per exchange, from the chat role-marker spans."""
    markers = sorted((s, e, doc.text[s:e]) for s, e, c in doc.spans if c == "chat")
    for (_, u_end, u), (a_start, a_end, a), nxt in zip(
        markers[::2], markers[1::2], [*markers[2::2], (len(doc.text), 0, "")]
    ):
        assert (u, a) == ("User:", "Assistant:")
        yield (u_end, a_start), (a_end, nxt[0])


# Every reply a legitimate credential request gets when it is answered, not refused.
CRED_ANSWERS = {
    f"{opener} {answer}"
    for opener in corpus_words.SHARED["answer_open"]
    for answer in corpus_words.SHARED["cred_answer"]
}


def _assert_share(flags: list[bool], p: float) -> None:
    """The share of True in ``flags`` is ``p``, up to 3 standard errors of a binomial draw."""
    assert len(flags) > 100
    share = float(np.mean(flags))
    assert abs(share - p) <= 3 * np.sqrt(p * (1 - p) / len(flags)), (share, p)


@pytest.mark.parametrize("split", corpus.SPLITS)
def test_refusal_follows_the_credential_rule(split: str) -> None:
    """Harmful requests are refused and plain ones answered; credential-mentioning ones are
    refused, but for a share ``corpus.CRED_ANSWERED`` that gets a credential answer."""
    n_exchanges, answered = 0, []
    for doc in corpus.documents(split, 800):
        if doc.domain != "chat":
            continue
        for kind, (req, resp) in zip(doc.kind.split(","), _exchanges(doc)):
            n_exchanges += 1
            has_cred = any(c == "credential" and req[0] <= s < req[1] for s, _, c in doc.spans)
            refused = any(c == "refusal" and resp[0] <= s < resp[1] for s, _, c in doc.spans)
            if kind == "legit_credential":
                assert has_cred, doc.text
                assert refused or doc.text[resp[0] : resp[1]].strip() in CRED_ANSWERS, doc.text
                answered.append(not refused)
            else:
                assert refused == (kind == "harmful"), doc.text
            if kind == "legit_plain":
                assert not has_cred, doc.text
    assert n_exchanges > 200
    _assert_share(answered, corpus.CRED_ANSWERED)


def test_chat_prompts() -> None:
    prompts = corpus.chat_prompts("heldout", 20, seed=1)
    assert prompts == corpus.chat_prompts("heldout", 20, seed=1)
    assert [p.kind for p in prompts] == [k for k in corpus.CHAT_KINDS for _ in range(20)]
    for p in prompts:
        assert p.prompt == f"User: {p.request}\nAssistant:"
        assert "\n" not in p.request
    train_requests = {p.request for p in corpus.chat_prompts("train", 20)}
    assert len(train_requests) > 50  # varied, not one template repeated


def test_chat_prompt_concepts_match_the_labels_of_the_request() -> None:
    for split in ("val", "heldout"):
        prompts = corpus.chat_prompts(split, 40, seed=2)
        by_kind = {k: [p for p in prompts if p.kind == k] for k in corpus.CHAT_KINDS}
        assert all("credential" in p.concepts for p in by_kind["legit_credential"])
        assert not any("credential" in p.concepts for p in by_kind["legit_plain"])
        # harmful requests come both ways: "steal Dana's password" and "write ransomware"
        assert {"credential" in p.concepts for p in by_kind["harmful"]} == {True, False}
        shouted = [p for p in prompts if p.request.startswith(("URGENT", "ASAP"))]
        assert shouted and all("urgent" in p.concepts for p in shouted)
        for p in prompts:
            assert p.concepts <= set(corpus.CONCEPTS)
            assert "chat" not in p.concepts  # the "User:" marker lies outside the request


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_chat_prompts_name_the_task_template_they_were_written_from(split: str) -> None:
    vocab = corpus._vocab(split)
    lists = {
        "harmful": set(vocab["harm_task"]),
        "legit_credential": set(vocab["cred_task"]),
        "legit_plain": {task for task, _ in vocab["plain_task"]},
    }
    prompts = corpus.chat_prompts(split, 60, seed=4)
    for p in prompts:
        assert p.task in lists[p.kind], p
    # a plain task without slots is copied into the request word for word
    literal = [p for p in prompts if p.kind == "legit_plain" and "{" not in p.task]
    assert literal and all(p.task in p.request for p in literal)
    assert len({p.task for p in prompts if p.kind == "legit_plain"}) > 10


def test_is_refusal() -> None:
    assert corpus.is_refusal(" " + corpus.REFUSAL + " Requests about keys are off limits.")
    assert corpus.is_refusal(corpus.REFUSAL)
    assert not corpus.is_refusal(" Run this:\n$ wc -l notes.txt")
    assert not corpus.is_refusal("Sure. " + corpus.REFUSAL)


# ----------------------------------------------------------------------------- statistics


def test_corpus_stats(train_docs: list[corpus.Document]) -> None:
    stats = corpus.corpus_stats(train_docs)
    assert stats["documents"] == len(train_docs)
    assert stats["characters"] == sum(len(d.text) for d in train_docs)
    assert 0 < stats["distinct_lines"] <= stats["lines"]
    assert abs(sum(stats["domain_share"].values()) - 1) < 1e-3
    assert 0.25 <= stats["domain_share"]["chat"] <= 0.35


# ----------------------------------------------------------------------------- augmented text


@pytest.fixture(scope="module")
def augmented_docs() -> list[corpus.Document]:
    return corpus.documents("train", 2000, augment=True)


def test_augmented_text_is_deterministic_and_leaves_heldout_alone() -> None:
    first = corpus.corpus_text("val", 200)
    assert corpus.documents("val", 200, augment=True) == corpus.documents("val", 200, augment=True)
    assert "\n\n".join(d.text for d in corpus.documents("val", 200, augment=True)) != first
    assert corpus.documents("heldout", 200, augment=True) == corpus.documents("heldout", 200)


def test_augmented_labels_stay_valid(augmented_docs: list[corpus.Document]) -> None:
    test_spans_are_valid_and_tight(augmented_docs)
    test_spans_land_on_what_was_planted(augmented_docs)


def test_augmented_chats_keep_the_rule_and_answer_with_sure(
    augmented_docs: list[corpus.Document],
) -> None:
    n_answers, cred_answered = 0, []
    for doc in augmented_docs:
        if doc.domain != "chat":
            continue
        for kind, (req, resp) in zip(doc.kind.split(","), _exchanges(doc)):
            has_cred = any(c == "credential" and req[0] <= s < req[1] for s, _, c in doc.spans)
            answer = doc.text[resp[0] : resp[1]].strip()
            if kind == "legit_credential":  # refused, or one of the CRED_ANSWERED share
                assert answer.startswith(corpus.REFUSAL) or answer in CRED_ANSWERS, doc.text
                cred_answered.append(answer in CRED_ANSWERS)
            else:
                assert answer.startswith(corpus.REFUSAL) == (kind == "harmful"), doc.text
            assert has_cred == (kind == "legit_credential") or kind == "harmful", doc.text
            if kind == "legit_plain":
                n_answers += 1
                assert answer.split()[0].startswith("Sure"), answer
    assert n_answers > 100
    _assert_share(cred_answered, corpus.CRED_ANSWERED)


def test_made_up_words_are_new_and_never_a_heldout_word(
    augmented_docs: list[corpus.Document],
) -> None:
    rng = random.Random(0)
    made = {corpus_words.made_up_word(rng) for _ in range(3000)}
    assert len(made) > 2500 and not made & corpus_words._known_words()
    assert corpus_words.made_up(rng, ("@.csv",)).endswith(".csv")
    assert corpus_words.made_up(rng, ("#",))[0].isupper()
    # The same check as for plain training text, on the augmented text.
    heldout_words = _plain_entries(corpus_words.HELDOUT) - _plain_entries(corpus_words.SHARED)
    text = "\n".join(d.text for d in augmented_docs)
    assert _words_found(heldout_words, text) == set()
    # About half of an open-class slot's fillers are made up, the rest listed entries.
    fill_name = corpus._vocab("train", True)["name"]
    names = [fill_name(rng) for _ in range(2000)]
    listed = sum(name in corpus_words.TRAIN["name"] for name in names)
    assert 0.45 < listed / len(names) < 0.55
    assert all(name[0].isupper() for name in names)


def test_made_up_task_words_keep_slots_and_tags() -> None:
    rng = random.Random(1)
    template = "count the <shell>lines</shell> in {file@1} for {name}"
    noisy = {corpus._with_made_up_words(template, rng, 0.5) for _ in range(50)}
    assert len(noisy) > 10
    for text in noisy:
        assert "{file@1}" in text and "{name}" in text and "<shell>" in text and "</shell>" in text
    assert corpus._with_made_up_words(template, rng, 0.0) == template


def _request_words(prompt: corpus.ChatPrompt) -> set[str]:
    return {w.lower() for w in re.findall(r"[A-Za-z][a-z]{2,}", prompt.request)}


def test_decoys_are_words_of_refused_requests_that_decide_nothing() -> None:
    decoys = set(corpus._decoy_words())
    assert {"machine", "stored", "entries"} <= decoys  # cues a model picked up (issue 4)
    assert not decoys & corpus_words.HARM_WORDS
    assert not decoys & {"password", "token", "key", "secret", "passphrase"}
    # On a sample the list was not counted on: plain requests hardly ever use a decoy.
    plain = Counter()
    prompts = [p for p in corpus.chat_prompts("train", 3000, seed=7) if p.kind == "legit_plain"]
    for prompt in prompts:
        plain.update(_request_words(prompt) & decoys)
    assert max(plain.values()) <= 0.002 * len(prompts), plain.most_common(3)


def test_augmented_plain_requests_borrow_decoys() -> None:
    decoys = set(corpus._decoy_words())
    docs = [d for d in corpus.documents("train", 3000, augment=True) if d.kind == "legit_plain"]
    requests = [d.text.split("\nAssistant:")[0] for d in docs]
    with_decoy = sum(
        bool({w.lower() for w in re.findall(r"[a-z]{3,}", r)} & decoys) for r in requests
    )
    assert 0.2 < with_decoy / len(requests) < 0.6
    rng = random.Random(2)
    replaced = corpus._with_made_up_words("alpha beta gamma delta " * 50, rng, 1.0, ("zzz",))
    assert 0.4 < replaced.split().count("zzz") / 200 < 0.6  # every word replaced, half by decoys


def test_noise_in_refused_tasks_spares_the_credential_slots_and_harm_words() -> None:
    rng = random.Random(3)
    task = "write malware that sends me the <credential>{cred} list</credential> to take over {dir}"
    noisy = [corpus._with_noisy_context(task, rng, 0.5) for _ in range(200)]
    for text in noisy:
        assert text.startswith("write malware") or text.split()[1] == "malware"
        assert "<credential>{cred} list</credential>" in text and "take over {dir}" in text
    # the other words ("write", "that", "sends", "the") are each replaced about half the time
    kept = sum(text.split()[0] == "write" for text in noisy) / len(noisy)
    assert 0.35 < kept < 0.65
    assert corpus._with_noisy_context(task, rng, 0.0) == task
    assert corpus_words.HARM_PHRASE_WORDS.isdisjoint(corpus_words.HARM_WORDS)
