"""Pack tokenized documents into fixed-length rows, the way every harvest in the course does.

One row is BOS, then ``context - 1`` items of running text, with EOS between documents:

    doc 1: a b c     doc 2: d e        context 4  ->  [BOS a b c] [BOS EOS d e] ...

Packing wastes no compute on padding, and the BOS at the start of every row gives each row
the same kind of first position. ``activations.pack_tokens`` packs token ids this way;
``corpus.labelled_rows`` packs ids and per-token concept labels together, so the labels
stay on the tokens they belong to.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np


def pack(
    docs: Iterable[np.ndarray], context: int, bos: np.ndarray, eos: np.ndarray
) -> Iterator[np.ndarray]:
    """Pack ``docs`` (arrays ``[n_tokens, ...]``) into rows ``[context, ...]``.

    ``bos`` and ``eos`` are one item each (shape ``[...]``): a token id, or an id with its
    labels beside it. What is left after the last full row is dropped.
    """
    if context < 2:
        raise ValueError(f"context must be at least 2 (BOS plus one token), got {context}")
    bos, eos = np.asarray(bos), np.asarray(eos)
    pending = np.empty((0, *bos.shape), dtype=bos.dtype)
    for doc in docs:
        doc = np.asarray(doc, dtype=bos.dtype).reshape(-1, *bos.shape)  # an empty one too
        pending = np.concatenate([pending, doc, eos[None]])
        while len(pending) >= context - 1:
            yield np.concatenate([bos[None], pending[: context - 1]])
            pending = pending[context - 1 :]
