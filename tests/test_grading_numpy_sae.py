"""Every numpy_sae check passes on the reference, fails on a stub, and names each known mistake."""

import numpy as np
import pytest
from grading_contract import checks_from_pairs, contract_tests

from labhelpers import grading
from labhelpers import numpy_sae as ns


def plain_pursuit(x, W_dec, k):
    return ns.matching_pursuit(x, W_dec, k, orthogonal=False)


def backward_with(
    x,
    p,
    pre,
    z,
    x_hat,
    l1,
    *,
    mask=True,
    l1_on=True,
    mse_mean=True,
    l1_per_row=False,
    bias_mean=False,
):
    """A hand-written backward pass with one switch per mistake."""
    err = 2.0 * (x_hat - x)
    if mse_mean:
        err = err / x.size
    dz = err @ p["W_dec"].T
    if l1_on:
        dz = dz + l1 * np.sign(z) / (z.shape[0] if l1_per_row else z.size)
    if mask:
        dz = np.where(pre > 0, dz, 0.0)
    bias = np.mean if bias_mean else np.sum
    return {"W_enc": x.T @ dz, "b_enc": bias(dz, 0), "W_dec": z.T @ err, "b_dec": bias(err, 0)}


def forward_difference(f, a, eps):
    g = np.zeros_like(a)
    f0 = f()
    for i in np.ndindex(a.shape):
        keep = a[i]
        a[i] = keep + eps
        g[i] = (f() - f0) / eps
        a[i] = keep
    return g


def half_step(f, a, eps):
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        keep = a[i]
        a[i] = keep + eps
        up = f()
        a[i] = keep - eps
        g[i] = (up - f()) / eps
        a[i] = keep
    return g


def left_nudged(f, a, eps):
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        a[i] += eps
        up = f()
        a[i] -= 2 * eps
        g[i] = (up - f()) / (2 * eps)
    return g


def pursuit_with(x, W, k, *, residual=True, from_x=False, absolute=False):
    z = np.zeros((x.shape[0], W.shape[0]))
    r = x.copy()
    for n in range(x.shape[0]):
        for _ in range(k):
            s = (r[n] if residual else x[n]) @ W.T
            if not residual:
                s[z[n] != 0] = -np.inf
            j = int(np.argmax(np.abs(s) if absolute else s))
            c = (x[n] @ W[j]) if from_x else s[j]
            c = c if absolute else max(c, 0.0)
            z[n, j] += c
            if residual:
                r[n] = r[n] - c * W[j]
    return z


# The per-sample loop is a second right answer for matching pursuit.
REFERENCES = {
    grading.check_sae_forward: ns.forward,
    grading.check_sae_backward: ns.backward,
    grading.check_numerical_gradient: ns.numerical_gradient,
    grading.check_matching_pursuit_encode: [plain_pursuit, pursuit_with],
}

# One wrong implementation per named mistake, written independently of the Mistake objects.
MISTAKES = {
    grading.check_sae_forward: [
        (
            "a missing ReLU",
            lambda x, p: (
                (x @ p["W_enc"] + p["b_enc"],) * 2
                + ((x @ p["W_enc"] + p["b_enc"]) @ p["W_dec"] + p["b_dec"],)
            ),
        ),
        ("the encoder bias left out", lambda x, p: ns.forward(x, dict(p, b_enc=0 * p["b_enc"]))),
        ("the decoder bias left out", lambda x, p: ns.forward(x, dict(p, b_dec=0 * p["b_dec"]))),
    ],
    grading.check_sae_backward: [
        ("no ReLU mask in the backward pass", lambda *a: backward_with(*a, mask=False)),
        ("the L1 term left out", lambda *a: backward_with(*a, l1_on=False)),
        ("a summed (not mean) squared error", lambda *a: backward_with(*a, mse_mean=False)),
        (
            "the L1 gradient divided by the batch size",
            lambda *a: backward_with(*a, l1_per_row=True),
        ),
        ("bias gradients averaged instead of summed", lambda *a: backward_with(*a, bias_mean=True)),
        (
            "every gradient with its sign flipped",
            lambda *a: {k: -v for k, v in backward_with(*a).items()},
        ),
    ],
    grading.check_numerical_gradient: [
        ("a forward difference", forward_difference),
        ("a division by eps instead of 2 * eps", half_step),
        ("entries left nudged after use", left_nudged),
    ],
    grading.check_matching_pursuit_encode: [
        (
            "no residual update (a linear top-k)",
            lambda x, W, k: pursuit_with(x, W, k, residual=False),
        ),
        (
            "coefficients measured on x instead of the residual",
            lambda x, W, k: pursuit_with(x, W, k, from_x=True),
        ),
        (
            "picks by |score| (negative coefficients allowed)",
            lambda x, W, k: pursuit_with(x, W, k, absolute=True),
        ),
    ],
}


CHECKS = checks_from_pairs(REFERENCES, MISTAKES)

test_passes_on_reference, test_stub_is_not_implemented, test_names_each_mistake = contract_tests(
    CHECKS
)


def test_every_check_is_exported():
    assert {check.__name__ for check in CHECKS} == set(grading.numpy_sae.__all__)


def test_check_reports_an_unknown_wrong_answer():
    with pytest.raises(AssertionError, match="wrong answer"):
        grading.check_sae_forward(lambda x, p: tuple(1.01 * v for v in ns.forward(x, p)))


def test_check_is_not_fooled_by_a_function_that_changes_its_inputs(capsys):
    def forward_that_zeroes_b_dec(x, p):
        out = ns.forward(x, p)
        p["b_dec"][:] = 0.0
        return out

    grading.check_sae_forward(forward_that_zeroes_b_dec)
    assert "passed" in capsys.readouterr().out
