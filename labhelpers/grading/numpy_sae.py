"""Checks for notebook 02's exercises: the NumPy SAE's forward and backward passes,
the numerical gradient, and the matching-pursuit encoder.

The references are the functions of ``labhelpers.numpy_sae``. The numerical gradient
gets fresh arrays for every call: it must nudge its array in place, and ``f`` reads that
very array. The other checks get their arrays as they are, so that a function which
changes one of its inputs (a zeroed ``b_dec``, an overwritten ``x_hat``, ``residual = x``
then ``residual -= ...``) is told so.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from labhelpers import numpy_sae
from labhelpers.grading.core import Mistake, check_function

__all__ = [
    "check_matching_pursuit_encode",
    "check_numerical_gradient",
    "check_sae_backward",
    "check_sae_forward",
]

# (batch, d_in, d_sae): the seed lab's own shape first, then small odd ones.
SHAPES = [(768, 8, 64), (5, 3, 4), (1, 2, 3), (16, 8, 12)]


def _params(seed: int) -> tuple[np.ndarray, numpy_sae.Params]:
    """x and non-trivial parameters (biases non-zero, so a dropped bias shows)."""
    batch, d_in, d_sae = SHAPES[seed % len(SHAPES)]
    rng = np.random.default_rng(100 + seed)
    x = rng.normal(size=(batch, d_in))
    params = {
        "W_enc": rng.normal(scale=0.5, size=(d_in, d_sae)),
        "b_enc": rng.normal(scale=0.3, size=d_sae),
        "W_dec": numpy_sae.normalize_rows(rng.normal(size=(d_sae, d_in))),
        "b_dec": rng.normal(scale=0.3, size=d_in),
    }
    return x, params


def _fresh(fn: Callable, build: Callable) -> Callable:
    """Call ``fn`` on newly built arguments for a case seed."""
    return lambda seed: fn(*build(seed))


# --- forward -----------------------------------------------------------------------------


def _forward_case(seed: int) -> tuple[np.ndarray, numpy_sae.Params]:
    return _params(seed)


def _forward_without(x, p, relu=True, b_enc=True, b_dec=True):
    pre = x @ p["W_enc"] + (p["b_enc"] if b_enc else 0.0)
    z = np.maximum(pre, 0.0) if relu else pre
    return pre, z, z @ p["W_dec"] + (p["b_dec"] if b_dec else 0.0)


def _forward_in_place_relu(x, p):
    pre = x @ p["W_enc"] + p["b_enc"]
    z = pre  # the same array: the ReLU below changes pre too
    z[z < 0] = 0.0
    return pre, z, z @ p["W_dec"] + p["b_dec"]


def _forward_swapped(x, p):
    pre, z, x_hat = numpy_sae.forward(x, p)
    return z, pre, x_hat


def check_sae_forward(sae_forward: Callable) -> None:
    """Check ``sae_forward(x, params) -> (pre, z, x_hat)``."""
    __tracebackhide__ = True
    mistakes = [
        Mistake(
            "a missing ReLU",
            lambda x, p: _forward_without(x, p, relu=False),
            "z is the ReLU of the pre-activation: np.maximum(pre, 0.0).",
        ),
        Mistake(
            "the encoder bias left out",
            lambda x, p: _forward_without(x, p, b_enc=False),
            "The pre-activation is x @ W_enc + b_enc.",
        ),
        Mistake(
            "the decoder bias left out",
            lambda x, p: _forward_without(x, p, b_dec=False),
            "The reconstruction is z @ W_dec + b_dec.",
        ),
        Mistake(
            "pre changed by an in-place ReLU",
            _forward_in_place_relu,
            "z = pre does not copy: setting z's negative entries to 0 changes pre too, and "
            "the backward pass needs pre's negative entries. Build z as a new array.",
        ),
        Mistake(
            "(z, pre, x_hat) returned in the wrong order",
            _forward_swapped,
            "Return (pre, z, x_hat): the pre-activation first, then the ReLU'd latents.",
        ),
    ]
    check_function(
        "check_sae_forward",
        sae_forward,
        numpy_sae.forward,
        [_forward_case(seed) for seed in range(len(SHAPES))],  # arrays, so a change to them is seen
        mistakes=mistakes,
    )


# --- backward ----------------------------------------------------------------------------

L1_COEFFS = [5.0, 0.7, 2.0, 0.0]


def _backward_case(seed: int) -> tuple:
    x, params = _params(seed)
    pre, z, x_hat = numpy_sae.forward(x, params)
    return x, params, pre, z, x_hat, L1_COEFFS[seed % len(L1_COEFFS)]


def _backward_variant(
    x, p, pre, z, x_hat, l1, *, mask=True, l1_on=True, scale="mean", l1_scale="all", bias="sum"
):
    d_x_hat = 2.0 * (x_hat - x) / {"mean": x.size, "batch": len(x), "sum": 1.0}[scale]
    l1_grad = l1 / (z.size if l1_scale == "all" else len(z)) * np.sign(z)
    d_z = d_x_hat @ p["W_dec"].T + (l1_grad if l1_on else 0.0)
    d_pre = d_z * (pre > 0) if mask else d_z
    reduce = np.sum if bias == "sum" else np.mean
    return {
        "W_enc": x.T @ d_pre,
        "b_enc": reduce(d_pre, axis=0),
        "W_dec": z.T @ d_x_hat,
        "b_dec": reduce(d_x_hat, axis=0),
    }


def _negated(*case):
    return {k: -v for k, v in numpy_sae.backward(*case).items()}


def _variant(**options: str | bool) -> Callable:
    return lambda *case: _backward_variant(*case, **options)


def check_sae_backward(sae_backward: Callable) -> None:
    """Check ``sae_backward(x, params, pre, z, x_hat, l1_coeff) -> {name: gradient}``."""
    __tracebackhide__ = True
    mistakes = [
        Mistake(
            "no ReLU mask in the backward pass",
            _variant(mask=False),
            "The ReLU passes gradient only where pre > 0: multiply d_z by (pre > 0).",
        ),
        Mistake(
            "the L1 term left out",
            _variant(l1_on=False),
            "The sparsity penalty l1_coeff * mean|z| adds l1_coeff / z.size * sign(z) to d_z.",
        ),
        Mistake(
            "a summed (not mean) squared error",
            _variant(scale="sum"),
            "The loss is a mean over all x.size entries, so d_x_hat = 2 * (x_hat - x) / x.size.",
        ),
        Mistake(
            "the L1 gradient divided by the batch size",
            _variant(l1_scale="batch"),
            "mean|z| averages over every entry of z: divide by z.size, not len(z).",
        ),
        Mistake(
            "bias gradients averaged instead of summed",
            _variant(bias="mean"),
            "A bias is added to every row, so its gradient is the *sum* of the rows' gradients.",
        ),
        Mistake(
            "every gradient with its sign flipped",
            _negated,
            "d loss / d x_hat is 2 * (x_hat - x) / x.size: reconstruction minus target.",
        ),
        Mistake(
            "a squared error averaged over the batch only",
            _variant(scale="batch"),
            "The loss is a mean over all x.size entries (B * d_in), so "
            "d_x_hat = 2 * (x_hat - x) / x.size.",
        ),
    ]
    # The mistakes differ from the answer by 0.05 or more; the tolerance lets a float32
    # computation through.
    check_function(
        "check_sae_backward",
        sae_backward,
        numpy_sae.backward,
        [_backward_case(seed) for seed in range(len(SHAPES))],
        mistakes=mistakes,
    )


# --- numerical gradient ------------------------------------------------------------------


def _gradient_case(seed: int) -> tuple[Callable[[], float], np.ndarray, float]:
    """A curved function of a fresh array, with cross terms so every entry matters."""
    rng = np.random.default_rng(200 + seed)
    a = rng.normal(size=[(3,), (2, 3), (4, 2), (5,)][seed % 4])
    eps = [1e-3, 1e-4, 1e-3, 1e-2][seed % 4]

    def f() -> float:
        return float(np.sum(np.sin(a) * a**2) + np.sum(a) ** 2 + np.exp(a).sum())

    return f, a, eps


def _forward_difference(f, a, eps):
    grad = np.zeros_like(a)
    base = f()
    for i in np.ndindex(a.shape):
        a[i] += eps
        grad[i] = (f() - base) / eps
        a[i] -= eps
    return grad


def _not_restored(f, a, eps):
    grad = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        a[i] += eps
        up = f()
        a[i] -= 2 * eps
        grad[i] = (up - f()) / (2 * eps)  # a[i] is left at original - eps
    return grad


def _nudged_copy(f, a, eps):
    return _forward_difference(f, a.copy(), eps)  # f() reads a, which never moves: all 0


def _half_step(f, a, eps):
    return numpy_sae.numerical_gradient(f, a, eps) * 2


def check_numerical_gradient(numerical_gradient: Callable) -> None:
    """Check ``numerical_gradient(f, a, eps) -> array like a`` (central differences)."""
    __tracebackhide__ = True
    mistakes = [
        Mistake(
            "a forward difference",
            _fresh(_forward_difference, _gradient_case),
            "Use central differences, (f(a + eps) - f(a - eps)) / (2 eps): their error is O(eps^2).",
        ),
        Mistake(
            "a division by eps instead of 2 * eps",
            _fresh(_half_step, _gradient_case),
            "The two nudged points are 2 * eps apart.",
        ),
        Mistake(
            "entries left nudged after use",
            _fresh(_not_restored, _gradient_case),
            "Put each entry back to its original value before moving on to the next.",
        ),
        Mistake(
            "every slope 0, as when a copy of a is nudged",
            _fresh(_nudged_copy, _gradient_case),
            "f() never saw the nudges: it reads the very array a it was built on, so a "
            "nudged copy leaves f() unchanged. Nudge a[i] itself, then put it back.",
        ),
    ]
    check_function(
        "check_numerical_gradient",
        _fresh(numerical_gradient, _gradient_case),
        _fresh(numpy_sae.numerical_gradient, _gradient_case),
        [(seed,) for seed in range(4)],
        mistakes=mistakes,
        atol=1e-7,
    )


# --- matching pursuit --------------------------------------------------------------------


def _pursuit_case(seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    rng = np.random.default_rng(300 + seed)
    n, d_in, d_sae, k = [(64, 8, 24, 3), (5, 3, 6, 2), (1, 4, 4, 1), (20, 8, 32, 4)][seed % 4]
    W_dec = numpy_sae.normalize_rows(rng.normal(size=(d_sae, d_in)))
    codes = np.where(rng.random((n, d_sae)) < 0.15, rng.uniform(0.5, 2.0, (n, d_sae)), 0.0)
    x = codes @ W_dec + 0.05 * rng.normal(size=(n, d_in))
    if seed % 4 == 2:
        # A second sample whose scores are all negative: its code must stay all 0, which
        # only the clip at 0 gives.
        x = np.vstack([x, np.linalg.solve(W_dec, -np.array([0.3, 0.6, 0.9, 1.2]))])
    return x, W_dec, k


def _no_residual(x, W_dec, k):
    scores = x @ W_dec.T
    keep = scores >= -np.sort(-scores, axis=1)[:, [k - 1]]
    return np.where(keep & (scores > 0), scores, 0.0)


def _pursuit_variant(
    x, W_dec, k, *, from_x=False, absolute=False, clip=True, accumulate=True, once=False
):
    """Plain matching pursuit with one switch per known mistake (all off: the answer)."""
    z = np.zeros((len(x), len(W_dec)))
    rows, residual = np.arange(len(x)), x.copy()
    for _ in range(k):
        scores = residual @ W_dec.T
        if once:
            scores[z != 0] = -np.inf
        j = (np.abs(scores) if absolute else scores).argmax(axis=1)
        coeff = (x * W_dec[j]).sum(axis=1) if from_x else scores[rows, j]
        coeff = np.maximum(coeff, 0.0) if clip else coeff
        z[rows, j] = z[rows, j] + coeff if accumulate else coeff
        residual = residual - coeff[:, None] * W_dec[j]
    return z


def _pursuit_mistake(**switches: bool) -> Callable:
    return lambda x, W_dec, k: _pursuit_variant(x, W_dec, k, **switches)


def check_matching_pursuit_encode(matching_pursuit_encode: Callable) -> None:
    """Check ``matching_pursuit_encode(x, W_dec, k) -> z`` (plain matching pursuit)."""
    __tracebackhide__ = True
    mistakes = [
        Mistake(
            "no residual update (a linear top-k)",
            _no_residual,
            "After each pick, subtract coefficient * W_dec[j] from the residual and score again.",
        ),
        Mistake(
            "coefficients measured on x instead of the residual",
            _pursuit_mistake(from_x=True),
            "The coefficient is the pick's dot product with the *residual*, not with x.",
        ),
        Mistake(
            "picks by |score| (negative coefficients allowed)",
            _pursuit_mistake(absolute=True, clip=False),
            "Latents are non-negative: pick the largest *signed* score and clip it at 0.",
        ),
        Mistake(
            "no clip at 0 (a negative coefficient when every score is negative)",
            _pursuit_mistake(clip=False),
            "Latents are non-negative: clip the chosen score at 0 before adding it to z.",
        ),
        Mistake(
            "a coefficient overwritten (=) instead of added to (+=)",
            _pursuit_mistake(accumulate=False),
            "A latent may be picked again in a later round: add the new score to its "
            "coefficient rather than replacing it.",
        ),
        Mistake(
            "each latent picked at most once",
            _pursuit_mistake(once=True),
            "Score every latent in every round: a latent picked before may be the best "
            "match again.",
        ),
    ]

    def reference(x, W_dec, k):
        return numpy_sae.matching_pursuit(x, W_dec, k, orthogonal=False)

    check_function(
        "check_matching_pursuit_encode",
        matching_pursuit_encode,
        reference,
        [_pursuit_case(seed) for seed in range(4)],
        mistakes=mistakes,
    )
