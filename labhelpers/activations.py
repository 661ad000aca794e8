"""Harvest a language model's activations at one hook point, to train SAEs on.

The pipeline, one function a step:

    texts ──pack_tokens──► rows of `context` tokens, each starting with BOS
          ──batched─────► [batch, context] token tensors
          ──harvest─────► [batch * (context - 1), d] activations (BOS position dropped),
                          the forward pass stopped right after the hook's layer
          ──ShuffleBuffer► mixed [batch_size, d] training batches, refilled in the background

``save_activations`` writes a harvest to disk (a memory-mapped ``.npy``), so several SAEs
can train on one harvest; ``load_activations`` reads it back without loading it all.

The text comes from the bundled corpus in the quick profile and from a streamed Hugging
Face dataset in the full profile; everything after the text is the same code.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from labhelpers import env, models
from labhelpers.packing import pack

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from labhelpers.train import TensorSource

# The full profile's text: the open replication of GPT-2's training data to train on, and
# a different corpus (a slice of the Pile) to evaluate on, so evaluation text is held out.
FULL_DATASET = "Skylion007/openwebtext"
FULL_EVAL_DATASET = "NeelNanda/pile-10k"


# --- hook points ----------------------------------------------------------------------


def hook_layer(hook_name: str) -> int | None:
    """The block a hook point sits in (``blocks.8.hook_resid_pre`` -> 8); 0 for embeddings,
    None for hooks after the last block (``ln_final``, ``unembed``)."""
    match = re.match(r"blocks\.(\d+)\.", hook_name)
    if match:
        return int(match.group(1))
    if hook_name.startswith(("hook_embed", "hook_pos_embed", "embed", "pos_embed")):
        return 0
    return None


def check_hook(model: TransformerBridge, hook_name: str) -> int | None:
    """Validate ``hook_name`` for ``model`` and return its layer; clear errors otherwise."""
    layer = hook_layer(hook_name)
    n_layers = model.cfg.n_layers
    if layer is not None and layer >= n_layers:
        raise ValueError(
            f"{hook_name!r} asks for layer {layer}, past the model's depth: it has {n_layers} "
            f"layers, numbered 0 to {n_layers - 1}."
        )
    models.check_hook_name(model, hook_name)
    return layer


# --- text and tokens --------------------------------------------------------------------


def corpus_texts(split: str = "train", n_documents: int = 20_000, seed: int = 0) -> Iterator[str]:
    """The bundled labelled corpus as a stream of documents (quick profile)."""
    from labhelpers import corpus

    for document in corpus.documents(split, n_documents, seed=seed):
        yield document.text


def dataset_texts(
    name: str = FULL_DATASET, split: str = "train", text_column: str = "text"
) -> Iterator[str]:
    """Stream the ``text_column`` of a Hugging Face dataset (full profile; needs the network)."""
    from datasets import load_dataset

    dataset = load_dataset(name, split=split, streaming=True)
    first = next(iter(dataset))
    if text_column not in first:
        raise ValueError(
            f"Dataset {name!r} has no text column {text_column!r}; its columns are "
            f"{sorted(first)}. Pass text_column= one of those."
        )
    for example in dataset:
        yield example[text_column]


def default_texts(split: str = "train") -> Iterator[str]:
    """The profile's text. Quick: the bundled corpus's ``split``. Full: OpenWebText, streamed,
    for ``"train"``; a slice of the Pile for any other split (text the SAE never trained on)."""
    if env.profile() == "quick":
        return corpus_texts(split, seed=0 if split == "train" else 1)
    return dataset_texts(FULL_DATASET if split == "train" else FULL_EVAL_DATASET)


def pack_tokens(texts: Iterable[str], tokenizer: Any, context: int) -> Iterator[torch.Tensor]:
    """Tokenize ``texts`` and pack them into rows of ``context`` tokens: BOS, then ``context - 1``
    tokens of running text with documents separated by EOS (``packing.pack``). Yields
    ``[context]`` int64 tensors; ``harvest`` drops the BOS position.
    """
    bos = tokenizer.bos_token_id
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else bos
    ids = (tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts)
    for row in pack(ids, context, np.int64(bos), np.int64(eos)):
        yield torch.from_numpy(row)


def token_rows(texts: Iterable[str], tokenizer: Any, context: int, n_rows: int) -> torch.Tensor:
    """The first ``n_rows`` packed rows of ``texts`` as one ``[n_rows, context]`` tensor."""
    rows = list(itertools.islice(pack_tokens(texts, tokenizer, context), n_rows))
    if len(rows) < n_rows:
        raise ValueError(f"the text gave only {len(rows)} rows of {context} tokens, not {n_rows}")
    return torch.stack(rows)


def batched(rows: Iterable[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    """Stack rows into ``[batch_size, context]`` batches (the last one may be smaller)."""
    batch: list[torch.Tensor] = []
    for row in rows:
        batch.append(row)
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


# --- harvesting ---------------------------------------------------------------------------


def _autocast(device: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on a GPU (half the memory traffic); nothing on CPU, where it is slower."""
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def harvest(
    model: TransformerBridge,
    hook_name: str | tuple[str, ...],
    token_batches: Iterable[torch.Tensor],
    exclude_bos: bool = True,
    autocast: bool = True,
) -> Iterator[torch.Tensor]:
    """Yield the activations at ``hook_name`` for each token batch, as ``[n_tokens, d]`` float32.

    The forward pass stops after the hook's layer (``stop_at_layer``), so harvesting layer 2
    of a 12-layer model costs three blocks, not twelve. Position 0 (BOS) is dropped when
    ``exclude_bos``: the model has seen nothing before it, so its activation is the same
    vector in every row and says nothing about the text; in GPT-2 its norm is also an
    outlier (massive activations) that would dominate a squared-error loss.
    A tuple of hook names (a transcoder's MLP input and output) gives each token's
    activations stacked in that order: ``[n_tokens, len(hook_name), d]``.
    ``autocast=False`` runs the model in float32 on a GPU too: for reading latents that must
    match what splicing and ablation (float32) see; bf16 can change which latents TopK keeps.
    """
    names = (hook_name,) if isinstance(hook_name, str) else tuple(hook_name)
    layers = [check_hook(model, name) for name in names]
    last = None if None in layers else max(layers)  # type: ignore[type-var]
    stop = last + 1 if last is not None and last + 1 < model.cfg.n_layers else None
    device = str(model.cfg.device)
    for tokens in token_batches:
        with _autocast(device) if autocast else contextlib.nullcontext():
            _, cache = model.run_with_cache(
                tokens.to(device), names_filter=list(names), stop_at_layer=stop
            )
        acts = torch.stack([cache[name] for name in names], dim=2)  # [batch, context, n, d]
        if exclude_bos:
            acts = acts[:, 1:]
        acts = acts.flatten(0, 1).float()
        yield acts[:, 0] if isinstance(hook_name, str) else acts


@torch.no_grad()
def token_acts(
    model: TransformerBridge,
    tokens: torch.Tensor,
    hook_names: Sequence[str],
    mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Activations ``[n_real_tokens, d]`` at each of ``hook_names``, from one forward pass.

    tokens: ``[batch, pos]``; mask: ``[batch, pos]``, True for real tokens (right-padded
    prompts, see ``circuits.tokenize_prompts``), or None when every token is real. BOS
    (position 0) and padding are left out; tokens come in row-major order, so row ``i`` of
    every result is the same token.
    """
    for name in hook_names:
        check_hook(model, name)
    _, cache = model.run_with_cache(tokens.to(model.cfg.device), names_filter=list(hook_names))
    keep = torch.ones(tokens.shape, dtype=torch.bool) if mask is None else mask.bool().clone()
    keep[:, 0] = False
    return {name: cache[name][keep.to(cache[name].device)] for name in hook_names}


def collect(
    model: TransformerBridge,
    hook_name: str | tuple[str, ...],
    texts: Iterable[str],
    n_tokens: int,
    context: int = 128,
    batch_size: int = 32,
    exclude_bos: bool = True,
    progress: bool = True,
) -> torch.Tensor:
    """Harvest exactly ``n_tokens`` activations into one ``[n_tokens, d]`` tensor (CPU);
    ``[n_tokens, 2, d]`` for a pair of hook names (see ``harvest``)."""
    rows = pack_tokens(texts, model.tokenizer, context)
    chunks, total = [], 0
    with tqdm(total=n_tokens, desc=f"harvest {hook_name}", unit="tok", disable=not progress) as bar:
        for acts in harvest(model, hook_name, batched(rows, batch_size), exclude_bos):
            acts = acts[: n_tokens - total].cpu()
            chunks.append(acts)
            total += len(acts)
            bar.update(len(acts))
            if total >= n_tokens:
                break
    if total < n_tokens:
        raise ValueError(f"The text ran out after {total} of the {n_tokens} tokens asked for.")
    return torch.cat(chunks)


# --- the shuffling buffer -----------------------------------------------------------------


class ShuffleBuffer:
    """Mix activations from many contexts into training batches, refilling in the background.

    Consecutive activations come from neighbouring tokens of one text and are strongly
    correlated; an SAE trained on them in order sees one topic at a time. The buffer holds
    ``buffer_size`` activations, shuffles them, hands out half as batches, and refills that
    half from ``source`` while the other half waits to be mixed with the newcomers.
    A thread reads ``source`` ahead (harvesting the next chunk while the SAE trains on this
    one); the order of batches depends only on ``seed`` and the source, not on timing.
    """

    def __init__(
        self,
        source: Iterable[torch.Tensor],
        buffer_size: int,
        batch_size: int,
        seed: int = 0,
        background: bool = True,
    ) -> None:
        if buffer_size < 2 * batch_size:
            raise ValueError(
                f"buffer_size ({buffer_size}) must hold at least two batches ({2 * batch_size})"
            )
        self.source, self.buffer_size, self.batch_size = iter(source), buffer_size, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.background = background

    def _chunks(self) -> Iterator[torch.Tensor]:
        """The source, read ahead by a thread when ``background``."""
        if not self.background:
            yield from self.source
            return
        ahead: queue.Queue = queue.Queue(maxsize=4)
        done, stop = object(), threading.Event()

        def put(item: object) -> bool:
            # A bounded wait, so that the thread notices when the consumer has stopped.
            while not stop.is_set():
                try:
                    ahead.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for chunk in self.source:
                    if not put(chunk):
                        return
            except BaseException as error:  # hand the error to the consumer
                put(error)
            put(done)

        producer = threading.Thread(target=produce, daemon=True, name="ShuffleBuffer")
        producer.start()
        try:
            while (item := ahead.get()) is not done:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:  # the consumer finished or closed us: let the harvesting thread end
            stop.set()
            # Wait for its forward pass in flight: hooks live on the shared model, so a
            # pass still running would mix its activations with the caller's next one.
            producer.join()

    def __iter__(self) -> Iterator[torch.Tensor]:
        # Chunks wait in a list and are joined once per refill: concatenating onto the
        # buffer for every chunk would copy the whole buffer again and again. Activations
        # stay on the device they were harvested on, so on a GPU the shuffle runs there.
        held: torch.Tensor | None = None
        pending: list[torch.Tensor] = []
        n_held = 0
        chunks = self._chunks()
        try:
            for chunk in chunks:
                pending.append(chunk)
                n_held += len(chunk)
                if n_held < self.buffer_size:
                    continue
                held = torch.cat(pending if held is None else [held, *pending])
                pending = []
                while len(held) >= self.buffer_size:
                    held = held[self._permutation(len(held), held.device)]
                    n_out = (self.buffer_size // 2) // self.batch_size * self.batch_size
                    yield from held[:n_out].split(self.batch_size)
                    held = held[n_out:]
                n_held = len(held)
            if held is not None or pending:
                held = torch.cat(pending if held is None else [held, *pending])
                held = held[self._permutation(len(held), held.device)]
                for batch in held.split(self.batch_size):
                    if len(batch) == self.batch_size:
                        yield batch
        finally:  # closing this iterator stops the harvesting thread too
            chunks.close()

    def _permutation(self, n: int, device: torch.device) -> torch.Tensor:
        """A random order of ``n`` rows from the CPU generator: the same on every device."""
        return torch.randperm(n, generator=self.generator).to(device)


# --- the on-disk cache ----------------------------------------------------------------------


def save_activations(
    path: str | Path,
    acts: Iterable[torch.Tensor],
    n_tokens: int,
    d: int,
    dtype: str = "float32",
    **metadata: Any,
) -> Path:
    """Write ``n_tokens`` activations from ``acts`` (chunks of ``[n, d]``) to ``path/acts.npy``,
    memory-mapped, with ``path/meta.json`` describing them (plus ``metadata``)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    out = np.lib.format.open_memmap(path / "acts.npy", mode="w+", dtype=dtype, shape=(n_tokens, d))
    filled = 0
    for chunk in acts:
        if chunk.shape[-1] != d:
            raise ValueError(f"activation width {chunk.shape[-1]} does not match d={d}")
        take = min(len(chunk), n_tokens - filled)
        out[filled : filled + take] = chunk[:take].float().cpu().numpy().astype(dtype)
        filled += take
        if filled == n_tokens:
            break
    out.flush()
    if filled < n_tokens:
        raise ValueError(f"only {filled} of {n_tokens} activations were provided")
    meta = {"n_tokens": n_tokens, "d": d, "dtype": dtype, **metadata}
    (path / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return path


def load_activations(path: str | Path) -> tuple[np.memmap, dict[str, Any]]:
    """Open a saved harvest read-only: ``([n_tokens, d] memory map, metadata)``."""
    path = Path(path)
    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    acts = np.load(path / "acts.npy", mmap_mode="r")
    if acts.shape != (meta["n_tokens"], meta["d"]):
        raise ValueError(
            f"{path}: acts.npy has shape {acts.shape}, meta.json says {(meta['n_tokens'], meta['d'])}"
        )
    return acts, meta


def cached_batches(
    acts: np.ndarray, batch_size: int, seed: int = 0, epochs: int = 1
) -> Iterator[torch.Tensor]:
    """Shuffled ``[batch_size, d]`` batches from a saved harvest, reading only what each batch needs."""
    generator = np.random.default_rng(seed)
    for _ in range(epochs):
        order = generator.permutation(len(acts))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            rows = np.sort(order[start : start + batch_size])  # sorted reads are kinder to the disk
            yield torch.from_numpy(np.asarray(acts[rows], dtype=np.float32))


class StreamSource:
    """A ``train.DataSource`` over a live harvest, for runs too long to hold in memory.

    Batches come from a ``ShuffleBuffer``; ``stats`` (a small separate harvest) serves the
    trainer's one-off statistics so that they consume no training data. The state is the
    number of batches handed out; resuming replays the (deterministic) stream to there.
    """

    def __init__(self, make_buffer: Callable[[], ShuffleBuffer], stats: torch.Tensor) -> None:
        self.make_buffer, self.stats = make_buffer, stats
        self.batches = 0
        self._iterator = iter(make_buffer())

    def next_batch(self, batch_size: int) -> torch.Tensor:
        try:
            batch = next(self._iterator)
        except StopIteration:
            raise RuntimeError(
                f"the activation stream ran out after {self.batches} batches"
            ) from None
        if len(batch) != batch_size:
            raise ValueError(
                f"the buffer yields batches of {len(batch)}, the trainer asked for {batch_size}"
            )
        self.batches += 1
        return batch

    def sample(self, n: int) -> tuple[torch.Tensor]:
        return (self.stats[:n],)

    def close(self) -> None:
        """Stop the stream: its harvesting thread ends instead of waiting for a reader."""
        self._iterator.close()  # type: ignore[attr-defined]

    def state_dict(self) -> dict[str, int]:
        return {"batches": self.batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.close()
        self._iterator = iter(self.make_buffer())
        for _ in range(int(state["batches"])):
            next(self._iterator)
        self.batches = int(state["batches"])


def training_source(
    model: TransformerBridge,
    hook_name: str | tuple[str, ...],
    make_texts: Callable[[], Iterable[str]],
    n_tokens: int,
    batch_size: int,
    context: int = 128,
    in_memory: bool = True,
    buffer_size: int = 2**18,
    harvest_batch: int = 32,
    seed: int = 0,
) -> TensorSource | StreamSource:
    """A data source for ``train.Trainer`` with ``n_tokens`` activations at ``hook_name``.

    ``in_memory`` (the quick profile): harvest everything once into a tensor; every epoch is
    a fresh shuffle. Otherwise (the full profile, ~100M tokens): stream through a
    ``ShuffleBuffer`` that harvests in the background while the SAE trains. Both read the
    same texts through the same ``harvest``. ``make_texts()`` must return a fresh iterator
    of the same texts each call (a resumed stream starts again from the beginning).
    """
    from labhelpers.train import TensorSource

    if in_memory:
        return TensorSource(
            collect(model, hook_name, make_texts(), n_tokens, context, harvest_batch), seed=seed
        )
    stats = collect(
        model, hook_name, make_texts(), min(n_tokens, 8192), context, harvest_batch, progress=False
    )

    def make_buffer() -> ShuffleBuffer:
        rows = batched(pack_tokens(make_texts(), model.tokenizer, context), harvest_batch)
        return ShuffleBuffer(harvest(model, hook_name, rows), buffer_size, batch_size, seed=seed)

    return StreamSource(make_buffer, stats)
