"""packing.pack: rows of BOS + running text, documents separated by EOS, extra columns kept."""

import numpy as np
import pytest

from labhelpers.packing import pack


def test_rows_are_bos_then_running_text_with_eos_between_documents():
    docs = [np.array([1, 2, 3]), np.array([4, 5]), np.array([], dtype=np.int64), np.array([6])]
    rows = list(pack(docs, 4, np.int64(0), np.int64(9)))
    # stream: 1 2 3 9 4 5 9 9 6 9 -> rows of three after BOS; the leftover "9" is dropped
    assert [r.tolist() for r in rows] == [[0, 1, 2, 3], [0, 9, 4, 5], [0, 9, 9, 6]]
    assert all(r.dtype == np.int64 for r in rows)


def test_columns_beside_the_ids_travel_with_their_tokens():
    ids = [np.array([11, 12, 13]), np.array([21, 22, 23, 24])]
    docs = [np.column_stack([d, d % 10]) for d in ids]  # second column: a per-token label
    rows = np.stack(list(pack(docs, 3, np.array([0, -1]), np.array([99, -2]))))
    assert rows.shape == (4, 3, 2)
    assert rows[:, 0].tolist() == [[0, -1]] * 4
    flat = rows[:, 1:].reshape(-1, 2)
    assert flat[:, 0].tolist() == [11, 12, 13, 99, 21, 22, 23, 24]
    assert flat[:, 1].tolist() == [1, 2, 3, -2, 1, 2, 3, 4]


def test_a_context_without_room_for_a_token_is_refused():
    with pytest.raises(ValueError, match="at least 2"):
        list(pack([np.array([1])], 1, np.int64(0), np.int64(9)))
