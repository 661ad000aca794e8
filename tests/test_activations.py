"""The activation pipeline on the bundled tiny model: hooks, early stop, BOS, buffer, cache, errors."""

import threading
import time

import numpy as np
import pytest
import torch

from labhelpers import activations as A
from labhelpers import corpus

CONTEXT = 24


@pytest.fixture(scope="module")
def texts():
    return [doc.text for doc in corpus.documents("val", 40, seed=1)]


@pytest.fixture(scope="module")
def token_batch(tiny_model, texts):
    rows = list(A.pack_tokens(texts, tiny_model.tokenizer, CONTEXT))
    return torch.stack(rows[:4])


def test_pack_tokens_makes_bos_rows_of_running_text(tiny_model, texts):
    tok = tiny_model.tokenizer
    rows = list(A.pack_tokens(texts, tok, CONTEXT))
    assert rows and all(r.shape == (CONTEXT,) and r[0] == tok.bos_token_id for r in rows)
    stream = []
    for text in texts:
        stream += tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    packed = torch.cat([r[1:] for r in rows]).tolist()
    assert packed == stream[: len(packed)] and len(stream) - len(packed) < CONTEXT - 1


def test_token_acts_leave_out_bos_and_padding(tiny_model):
    HOOK, EARLIER = "blocks.1.hook_resid_pre", "blocks.0.hook_mlp_out"
    from labhelpers.circuits import tokenize_prompts

    prompts = ["The weather today is", "User: hi"]
    tokens, _, mask = tokenize_prompts(tiny_model, prompts)
    acts = A.token_acts(tiny_model, tokens, [HOOK, EARLIER], mask)
    for name in (HOOK, EARLIER):
        alone = [
            tiny_model.run_with_cache(tiny_model.to_tokens(p), names_filter=[name])[1][name][0, 1:]
            for p in prompts
        ]
        torch.testing.assert_close(acts[name], torch.cat(alone), atol=1e-5, rtol=1e-4)


def test_token_acts_without_a_mask_drop_only_bos(tiny_model, random_tokens):
    tokens = random_tokens(2, 9)
    (acts,) = A.token_acts(tiny_model, tokens, ["blocks.2.hook_resid_pre"]).values()
    (expected,) = A.harvest(tiny_model, "blocks.2.hook_resid_pre", [tokens])
    torch.testing.assert_close(acts.float(), expected, atol=1e-5, rtol=1e-4)


def test_token_acts_name_a_wrong_hook(tiny_model, random_tokens):
    with pytest.raises(KeyError, match="hook_resid_pree"):
        A.token_acts(tiny_model, random_tokens(1, 4), ["blocks.1.hook_resid_pree"])


@pytest.mark.parametrize(
    "hook",
    [
        "blocks.0.hook_resid_pre",
        "blocks.1.hook_mlp_out",
        "blocks.2.hook_attn_out",
        "blocks.3.hook_resid_post",
        "blocks.1.mlp.hook_post",
    ],
)
def test_harvest_matches_a_full_forward_pass_at_each_hook(tiny_model, token_batch, hook):
    (acts,) = A.harvest(tiny_model, hook, [token_batch])
    _, cache = tiny_model.run_with_cache(token_batch, names_filter=[hook])
    expected = cache[hook][:, 1:].reshape(-1, cache[hook].shape[-1])
    width = tiny_model.cfg.d_mlp if "mlp.hook_post" in hook else tiny_model.cfg.d_model
    assert acts.shape == (token_batch.shape[0] * (CONTEXT - 1), width)
    torch.testing.assert_close(acts, expected.float())


def test_harvest_stops_after_the_hooks_layer(tiny_model, token_batch):
    calls = [0] * tiny_model.cfg.n_layers
    handles = [
        block.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
        for i, block in enumerate(tiny_model.blocks)
    ]
    try:
        list(A.harvest(tiny_model, "blocks.1.hook_resid_post", [token_batch]))
    finally:
        for handle in handles:
            handle.remove()
    assert calls[:2] == [1, 1] and sum(calls[2:]) == 0, calls


def bf16_on_cpu(entered: list[str]):
    """An ``_autocast`` stand-in that records each use and runs bf16 on CPU, as on a GPU."""

    def helper(device: str):
        entered.append(device)
        return torch.autocast("cpu", dtype=torch.bfloat16)

    return helper


def test_harvest_autocasts_unless_told_not_to(tiny_model, token_batch, monkeypatch):
    entered: list[str] = []
    monkeypatch.setattr(A, "_autocast", bf16_on_cpu(entered))
    hook = "blocks.2.hook_resid_pre"
    (fp32,) = A.harvest(tiny_model, hook, [token_batch], autocast=False)
    assert entered == []
    (bf16,) = A.harvest(tiny_model, hook, [token_batch])
    assert entered == ["cpu"]
    _, cache = tiny_model.run_with_cache(token_batch, names_filter=[hook])
    torch.testing.assert_close(fp32, cache[hook][:, 1:].reshape(fp32.shape))
    assert not torch.allclose(bf16, fp32, atol=1e-4)  # the default did run in bf16


def test_bos_position_is_dropped_and_carries_no_information(tiny_model, token_batch):
    (kept,) = A.harvest(tiny_model, "blocks.2.hook_resid_pre", [token_batch], exclude_bos=True)
    (full,) = A.harvest(tiny_model, "blocks.2.hook_resid_pre", [token_batch], exclude_bos=False)
    full = full.reshape(token_batch.shape[0], CONTEXT, -1)
    torch.testing.assert_close(kept, full[:, 1:].reshape(-1, full.shape[-1]))
    # position 0 has seen only BOS: the same vector in every row
    assert full[:, 0].std(0).norm() < 1e-3 * full[:, 1].std(0).norm()


def test_collect_returns_exactly_n_tokens(tiny_model, texts):
    acts = A.collect(
        tiny_model,
        "blocks.1.hook_resid_pre",
        texts,
        500,
        context=CONTEXT,
        batch_size=4,
        progress=False,
    )
    assert acts.shape == (500, tiny_model.cfg.d_model) and torch.isfinite(acts).all()
    with pytest.raises(ValueError, match="ran out"):
        A.collect(
            tiny_model, "blocks.1.hook_resid_pre", texts[:1], 10**6, context=CONTEXT, progress=False
        )


def labelled_chunks(n_chunks=12, size=50):
    """Chunk i holds rows whose every entry is i, so a batch shows which chunks it mixes."""
    return [torch.full((size, 2), float(i)) for i in range(n_chunks)]


def test_shuffle_buffer_mixes_chunks_and_loses_nothing():
    buffer = A.ShuffleBuffer(labelled_chunks(), buffer_size=200, batch_size=20, seed=0)
    batches = list(buffer)
    assert all(b.shape == (20, 2) for b in batches)
    sources_per_batch = [len(torch.unique(b[:, 0])) for b in batches]
    assert np.mean(sources_per_batch) >= 3, sources_per_batch  # in order, each batch would hold 1
    seen = torch.cat(batches)[:, 0]
    counts = torch.bincount(seen.long(), minlength=12)
    assert counts.max() <= 50 and counts.sum() >= 600 - 20  # at most one partial batch dropped


def test_shuffle_buffer_is_deterministic_with_or_without_the_thread():
    runs = [
        torch.cat(list(A.ShuffleBuffer(labelled_chunks(), 200, 20, seed=3, background=bg)))
        for bg in (True, False, True)
    ]
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
    other = torch.cat(list(A.ShuffleBuffer(labelled_chunks(), 200, 20, seed=4)))
    assert not torch.equal(runs[0], other)


def test_shuffle_buffer_passes_on_source_errors():
    def broken():
        yield torch.zeros(10, 2)
        raise RuntimeError("harvest failed")

    with pytest.raises(RuntimeError, match="harvest failed"):
        list(A.ShuffleBuffer(broken(), 8, 4))
    with pytest.raises(ValueError, match="at least two batches"):
        A.ShuffleBuffer([], buffer_size=10, batch_size=8)


def test_disk_cache_round_trip(tmp_path):
    chunks = [torch.randn(30, 8) for _ in range(4)]
    A.save_activations(
        tmp_path / "h", chunks, n_tokens=100, d=8, hook_name="blocks.0.hook_resid_pre"
    )
    acts, meta = A.load_activations(tmp_path / "h")
    assert isinstance(acts, np.memmap) and meta["hook_name"] == "blocks.0.hook_resid_pre"
    np.testing.assert_array_equal(acts, torch.cat(chunks)[:100].numpy())
    batches = list(A.cached_batches(acts, batch_size=25, seed=0, epochs=2))
    assert len(batches) == 8
    first_epoch = torch.cat(batches[:4])  # every row exactly once, in a shuffled order
    assert not torch.equal(first_epoch, torch.from_numpy(np.array(acts)))
    torch.testing.assert_close(first_epoch.sum(0), torch.from_numpy(np.array(acts)).sum(0))


def test_disk_cache_rejects_short_or_mismatched_input(tmp_path):
    with pytest.raises(ValueError, match="only 30 of 100"):
        A.save_activations(tmp_path / "a", [torch.randn(30, 8)], n_tokens=100, d=8)
    with pytest.raises(ValueError, match="width 4"):
        A.save_activations(tmp_path / "b", [torch.randn(30, 4)], n_tokens=10, d=8)


def test_unknown_hook_and_layer_past_depth_raise_clear_errors(tiny_model):
    with pytest.raises(KeyError, match=r"Did you mean.*blocks\.0\.hook_resid_pre"):
        A.check_hook(tiny_model, "blocks.0.hook_resid_pree")
    depth = tiny_model.cfg.n_layers
    with pytest.raises(ValueError, match=f"past the model's depth: it has {depth} layers"):
        A.check_hook(tiny_model, f"blocks.{depth}.hook_resid_pre")


def test_dataset_without_text_column_is_named(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: [{"content": "x", "id": 1}])
    with pytest.raises(
        ValueError, match=r"no text column 'text'; its columns are \['content', 'id'\]"
    ):
        next(A.dataset_texts("some/dataset"))


def test_dataset_texts_streams_the_column(monkeypatch):
    import datasets

    calls = {}

    def fake_load(name, split, streaming):
        calls.update(name=name, split=split, streaming=streaming)
        return [{"text": "a"}, {"text": "b"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    assert list(A.dataset_texts("owt", split="train")) == ["a", "b"]
    assert calls == {"name": "owt", "split": "train", "streaming": True}


def test_stream_source_serves_batches_and_resumes_at_the_same_place():
    def make():
        return A.ShuffleBuffer(labelled_chunks(), 200, 20, seed=0, background=False)

    straight = A.StreamSource(make, stats=torch.zeros(5, 2))
    batches = [straight.next_batch(20) for _ in range(6)]
    resumed = A.StreamSource(make, stats=torch.zeros(5, 2))
    resumed.load_state_dict({"batches": 3})
    assert torch.equal(resumed.next_batch(20), batches[3]) and resumed.state_dict() == {
        "batches": 4
    }
    assert straight.sample(3)[0].shape == (3, 2)
    with pytest.raises(ValueError, match="batches of 20"):
        straight.next_batch(32)


def test_closing_a_stream_waits_for_its_harvesting_thread():
    def slow_endless():  # a harvest far longer than anyone reads, each chunk a slow pass
        while True:
            time.sleep(0.05)
            yield torch.zeros(10, 2)

    def harvesting_threads():
        return [t for t in threading.enumerate() if t.name == "ShuffleBuffer"]

    before = len(harvesting_threads())
    source = A.StreamSource(
        lambda: A.ShuffleBuffer(slow_endless(), 40, 10), stats=torch.zeros(5, 2)
    )
    source.next_batch(10)
    assert len(harvesting_threads()) == before + 1  # reading ahead
    source.close()
    # Gone already, not soon: a pass still in flight would share the model with the caller.
    assert len(harvesting_threads()) == before
    with pytest.raises(RuntimeError, match="ran out"):  # a closed stream says so
        source.next_batch(10)


def test_a_streamed_training_source_serves_the_hooks_activations(tiny_model):
    """The full profile's path (``in_memory=False``), on the tiny model."""

    def texts():
        return A.corpus_texts("train", 100, seed=5)

    source = A.training_source(
        tiny_model,
        "blocks.1.hook_resid_pre",
        texts,
        1_000,
        32,
        context=32,
        in_memory=False,
        buffer_size=256,
        harvest_batch=4,
    )
    try:
        batches = [source.next_batch(32) for _ in range(3)]
    finally:
        source.close()
    assert source.sample(50)[0].shape == (50, tiny_model.cfg.d_model)
    assert all(b.shape == (32, tiny_model.cfg.d_model) for b in batches)
    # Shuffled across contexts, yet every row is an activation the model really produced.
    harvested = A.collect(
        tiny_model, "blocks.1.hook_resid_pre", texts(), 8 * 31 * 4, 32, 4, progress=False
    )
    squared = (torch.cat(batches)[:, None] - harvested[None]).pow(2).sum(-1)  # exact, unlike cdist
    assert squared.min(1).values.max() < 1e-8
