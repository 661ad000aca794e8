"""The machinery behind every exercise check.

A check runs the learner's function and a reference on the same inputs and compares
the results. When they differ it tries each *known mistake* (a deliberately wrong
implementation, such as "forgot the ReLU") on the same inputs; if the learner's
output matches one, the message names that mistake. Otherwise it shows expected
against got: shapes and a few values.

A passing check prints one line. A failing check raises ``AssertionError`` with a
short message (and no chained traceback), so that a notebook shows the hint, not a
wall of frames.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Mistake", "check_function", "fail", "passed", "to_numpy"]


@dataclass(frozen=True)
class Mistake:
    """A known wrong answer: ``fn`` reproduces it, ``hint`` tells the learner what to fix."""

    name: str
    fn: Callable[..., Any]
    hint: str


def passed(name: str, detail: str = "") -> None:
    """Print the one-line confirmation of a passing check."""
    print(f"✓ {name} passed" + (f" ({detail})" if detail else ""))


def fail(name: str, message: str) -> None:
    """Raise the check's ``AssertionError``; IPython hides this frame from the traceback."""
    __tracebackhide__ = True
    raise AssertionError(f"{name}: {message}") from None


def to_numpy(value: Any) -> Any:
    """Convert torch tensors (and nested tuples/lists/dicts of them) to NumPy arrays."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return (
            value.detach().cpu().float().numpy()
            if value.is_floating_point()
            else value.detach().cpu().numpy()
        )
    if isinstance(value, Mapping):
        return {k: to_numpy(v) for k, v in value.items()}
    if (
        isinstance(value, tuple | list)
        and value
        and not all(isinstance(v, int | float) for v in value)
    ):
        return type(value)(to_numpy(v) for v in value)
    if isinstance(value, int | float | bool | np.number | list):
        return np.asarray(value)
    return value


def _describe(value: Any) -> str:
    """A short picture of a value: its shape and its first few entries."""
    value = to_numpy(value)
    if isinstance(value, np.ndarray):
        flat = value.reshape(-1)[:4]
        with np.printoptions(precision=4, suppress=True):
            more = ", …" if value.size > 4 else ""
            return f"shape {tuple(value.shape)}, values {np.array2string(flat, separator=', ')[:-1]}{more}]"
    if isinstance(value, tuple | list):
        return (
            f"{type(value).__name__} of {len(value)}: ("
            + "; ".join(_describe(v) for v in value)
            + ")"
        )
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in value.items()) + "}"
    return repr(value)


def first_difference(
    expected: Any, got: Any, atol: float, rtol: float, equal_nan: bool = False
) -> str | None:
    """Return why ``got`` differs from ``expected`` (None when they match).

    ``equal_nan``: NaNs in the same places agree. Never for the reference (a NaN is not a
    right answer), but a known mistake that gives NaN is matched by one.
    """
    expected, got = to_numpy(expected), to_numpy(got)
    if got is None and expected is not None:
        return "got None: does your function end with a `return` of its result?"
    if isinstance(expected, Mapping):
        if not isinstance(got, Mapping) or set(got) != set(expected):
            return f"expected a dict with keys {sorted(expected)}, got {_describe(got)}"
        for key in expected:
            why = first_difference(expected[key], got[key], atol, rtol, equal_nan)
            if why:
                return f"[{key!r}] {why}"
        return None
    if isinstance(expected, tuple | list) and not isinstance(expected, np.ndarray):
        if not isinstance(got, tuple | list) or len(got) != len(expected):
            return f"expected {_describe(expected)}, got {_describe(got)}"
        for i, (e, g) in enumerate(zip(expected, got)):
            why = first_difference(e, g, atol, rtol, equal_nan)
            if why:
                return f"item {i}: {why}"
        return None
    if isinstance(expected, np.ndarray):
        if not isinstance(got, np.ndarray | np.number | int | float):
            return f"expected an array ({_describe(expected)}), got {type(got).__name__}"
        got = np.asarray(got)
        if got.shape != expected.shape:
            return f"expected shape {tuple(expected.shape)}, got shape {tuple(got.shape)}"
        try:
            got_float = got.astype(float)
        except (TypeError, ValueError):
            return f"expected numbers, got an array of {got.dtype} ({_describe(got)})"
        if expected.dtype == bool or got.dtype == bool:
            ok = np.array_equal(expected, got)
        else:
            ok = np.allclose(
                got_float, expected.astype(float), atol=atol, rtol=rtol, equal_nan=equal_nan
            )
        if not ok:
            if not np.all(np.isfinite(got_float)):
                return f"got NaN or inf values ({_describe(got)})"
            return (
                f"values differ: expected {_describe(expected)}; got {_describe(got)}"
                + _largest_difference(expected.astype(float), got_float)
            )
        return None
    return None if expected == got else f"expected {expected!r}, got {got!r}"


def _largest_difference(expected: np.ndarray, got: np.ndarray) -> str:
    """Where an array answer is furthest from the expected one (the first few entries
    shown may agree), e.g. "; largest difference at index (2, 0): expected 1.5, got 0"."""
    if expected.ndim == 0:
        return ""
    index = np.unravel_index(np.argmax(np.abs(got - expected)), expected.shape)
    where = tuple(int(i) for i in index)
    if len(where) == 1:
        where = where[0]
    return f"; largest difference at index {where}: expected {expected[index]:.6g}, got {got[index]:.6g}"


def _mutated(before: Any, after: Any) -> bool:
    """True when an array, tensor, dict or list argument was changed by the call."""
    if isinstance(before, Mapping):
        return set(before) != set(after) or any(_mutated(before[k], after[k]) for k in before)
    if isinstance(before, list):
        return len(before) != len(after) or any(_mutated(b, a) for b, a in zip(before, after))
    if isinstance(before, np.ndarray) or hasattr(before, "detach"):
        return not np.array_equal(to_numpy(before), to_numpy(after))
    if isinstance(before, int | float | str):
        return before != after
    return False


def _agrees(
    fn: Callable[..., Any], other: Callable[..., Any], case: Sequence[Any], atol: float, rtol: float
) -> bool:
    try:
        return (
            first_difference(
                fn(*copy.deepcopy(case)), other(*copy.deepcopy(case)), atol, rtol, equal_nan=True
            )
            is None
        )
    except Exception:
        return False


def _matching_mistake(
    learner_fn: Callable[..., Any],
    mistakes: Sequence[Mistake],
    cases: Sequence[Sequence[Any]],
    failed: int,
    atol: float,
    rtol: float,
) -> Mistake | None:
    """The known mistake the learner's function reproduces: on every case if one does, else on the failing case."""
    candidates = [m for m in mistakes if _agrees(m.fn, learner_fn, cases[failed], atol, rtol)]
    for mistake in candidates:
        if all(_agrees(mistake.fn, learner_fn, case, atol, rtol) for case in cases):
            return mistake
    return candidates[0] if candidates else None


def check_function(
    name: str,
    learner_fn: Callable[..., Any],
    reference_fn: Callable[..., Any],
    cases: Iterable[Sequence[Any]],
    *,
    mistakes: Sequence[Mistake] = (),
    atol: float = 1e-6,
    rtol: float = 1e-5,
) -> None:
    """Compare ``learner_fn(*case)`` with ``reference_fn(*case)`` on every case.

    Passes quietly with one printed line; fails with the name of a known mistake when
    the learner's output matches one, and with expected vs got otherwise.
    """
    __tracebackhide__ = True
    cases = list(cases)
    for i, case in enumerate(cases):
        expected = reference_fn(*copy.deepcopy(case))
        given = copy.deepcopy(case)  # the learner's own copy, so a mutation cannot leak
        try:
            got = learner_fn(*given)
        except NotImplementedError:
            fail(
                name, "not implemented yet: replace the `raise NotImplementedError` with your code."
            )
        except Exception as error:  # the learner's code crashed: say how, briefly
            fail(name, f"your function raised {type(error).__name__}: {error}")
        if any(_mutated(a, b) for a, b in zip(case, given)):
            fail(name, "your function changed its input in place; compute a new value instead.")
        why = first_difference(expected, got, atol, rtol)
        if why is None:
            continue
        mistake = _matching_mistake(learner_fn, mistakes, cases, i, atol, rtol)
        if mistake is not None:
            fail(name, f"looks like {mistake.name}. {mistake.hint}")
        fail(name, f"wrong answer on case {i + 1} of {len(cases)}: {why}")
    passed(name, f"{len(cases)} cases")
