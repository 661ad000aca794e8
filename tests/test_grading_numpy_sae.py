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
    mse_per_row=False,
    l1_per_row=False,
    bias_mean=False,
):
    """A hand-written backward pass with one switch per mistake."""
    err = 2.0 * (x_hat - x)
    if mse_per_row:
        err = err / x.shape[0]
    elif mse_mean:
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


def forward_relu_in_place(x, p):
    pre = x @ p["W_enc"] + p["b_enc"]
    z = pre
    np.maximum(z, 0.0, out=z)  # z is pre: this clips pre too
    return pre, z, z @ p["W_dec"] + p["b_dec"]


def nudges_a_copy(f, a, eps):
    b = a.copy()  # f() reads a, not b
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        keep = b[i]
        b[i] = keep + eps
        up = f()
        b[i] = keep - eps
        g[i] = (up - f()) / (2 * eps)
        b[i] = keep
    return g


def pursuit_with(
    x,
    W,
    k,
    *,
    residual=True,
    from_x=False,
    absolute=False,
    clip=True,
    overwrite=False,
    once=False,
):
    z = np.zeros((x.shape[0], W.shape[0]))
    r = x.copy()
    for n in range(x.shape[0]):
        for _ in range(k):
            s = (r[n] if residual else x[n]) @ W.T
            if not residual or once:
                s[z[n] != 0] = -np.inf
            j = int(np.argmax(np.abs(s) if absolute else s))
            c = (x[n] @ W[j]) if from_x else s[j]
            c = c if absolute or not clip else max(c, 0.0)
            z[n, j] = c if overwrite else z[n, j] + c
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
        ("pre changed by an in-place ReLU", forward_relu_in_place),
        (
            "(z, pre, x_hat) returned in the wrong order",
            lambda x, p: (lambda pre, z, x_hat: (z, pre, x_hat))(*ns.forward(x, p)),
        ),
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
        (
            "a squared error averaged over the batch only",
            lambda *a: backward_with(*a, mse_per_row=True),
        ),
    ],
    grading.check_numerical_gradient: [
        ("a forward difference", forward_difference),
        ("a division by eps instead of 2 * eps", half_step),
        ("entries left nudged after use", left_nudged),
        ("every slope 0", nudges_a_copy),
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
        ("no clip at 0", lambda x, W, k: pursuit_with(x, W, k, clip=False)),
        ("a coefficient overwritten (=)", lambda x, W, k: pursuit_with(x, W, k, overwrite=True)),
        ("each latent picked at most once", lambda x, W, k: pursuit_with(x, W, k, once=True)),
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


def test_a_forward_pass_that_changes_its_inputs_is_refused():
    # its outputs are right, but in the notebook it would zero the SAE's b_dec while training
    def forward_that_zeroes_b_dec(x, p):
        out = ns.forward(x, p)
        p["b_dec"][:] = 0.0
        return out

    with pytest.raises(AssertionError, match="changed its input in place"):
        grading.check_sae_forward(forward_that_zeroes_b_dec)


def test_a_float32_backward_pass_passes(capsys):
    """Computed in float32, the gradients differ from float64 by ~1e-7 at entries near 0;
    the check's old atol of 1e-9 refused them with "values differ" and identical digits."""

    def backward_float32(x, p, pre, z, x_hat, l1):
        x, pre, z, x_hat = (a.astype(np.float32) for a in (x, pre, z, x_hat))
        d_x_hat = 2 * (x_hat - x) / x.size
        d_z = d_x_hat @ p["W_dec"].astype(np.float32).T + l1 / z.size * np.sign(z)
        d_pre = d_z * (pre > 0)
        return {
            "W_enc": x.T @ d_pre,
            "b_enc": d_pre.sum(0),
            "W_dec": z.T @ d_x_hat,
            "b_dec": d_x_hat.sum(0),
        }

    grading.check_sae_backward(backward_float32)
    assert "passed" in capsys.readouterr().out


def test_a_backward_pass_that_overwrites_x_hat_is_caught():
    def backward_in_place(x, p, pre, z, x_hat, l1):
        d_x_hat = x_hat  # not a copy
        d_x_hat -= x
        d_x_hat *= 2 / x.size
        return backward_with(x, p, pre, z, x + d_x_hat * x.size / 2, l1)

    with pytest.raises(AssertionError, match="changed its input in place"):
        grading.check_sae_backward(backward_in_place)


def test_a_pursuit_whose_residual_is_x_itself_is_caught():
    # residual = x (no copy) then residual -= ...: the notebook's data x is overwritten
    def residual_aliases_x(x, W, k):
        z = np.zeros((len(x), len(W)))
        rows, residual = np.arange(len(x)), x
        for _ in range(k):
            scores = residual @ W.T
            j = scores.argmax(axis=1)
            coeff = np.maximum(scores[rows, j], 0.0)
            z[rows, j] += coeff
            residual -= coeff[:, None] * W[j]
        return z

    with pytest.raises(AssertionError, match="changed its input in place"):
        grading.check_matching_pursuit_encode(residual_aliases_x)


def test_a_pursuit_that_stops_at_a_negative_score_passes(capsys):
    def stop_early(x, W, k):
        z = np.zeros((len(x), len(W)))
        for n in range(len(x)):
            r = x[n].copy()
            for _ in range(k):
                s = W @ r
                j = int(np.argmax(s))
                if s[j] <= 0:
                    break
                z[n, j] += s[j]
                r -= s[j] * W[j]
        return z

    grading.check_matching_pursuit_encode(stop_early)
    assert "passed" in capsys.readouterr().out
