"""labhelpers.numpy_sae: the seed lab's figures, the manual gradients, and the diagnostics."""

import numpy as np
import pytest
import torch

from labhelpers import numpy_sae as ns


@pytest.fixture(scope="module")
def seed_lab():
    """The course's seed lab: data, then the SAE's initial draws from the same generator."""
    rng = np.random.default_rng(42)
    data = ns.superposition_data(768, rng)
    params = ns.init_params(rng, d_in=8, d_sae=64)
    return data, params


def small_problem(seed=0, batch=12, d_in=5, d_sae=7):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, d_in))
    params = {
        "W_enc": rng.normal(scale=0.5, size=(d_in, d_sae)),
        "b_enc": rng.normal(scale=0.2, size=d_sae),
        "W_dec": ns.normalize_rows(rng.normal(size=(d_sae, d_in))),
        "b_dec": rng.normal(scale=0.2, size=d_in),
    }
    return x, params


# --- data ----------------------------------------------------------------------------------


def test_data_has_unit_directions_and_two_to_four_active(seed_lab):
    data, _ = seed_lab
    assert data.directions.shape == (24, 8) and data.x.shape == (768, 8)
    np.testing.assert_allclose(np.linalg.norm(data.directions, axis=1), 1.0)
    active = (data.codes != 0).sum(axis=1)
    assert active.min() == 2 and active.max() == 4
    noise = data.x - data.codes @ data.directions
    assert 0.025 < noise.std() < 0.035


def test_more_samples_keep_the_same_directions(seed_lab):
    data, _ = seed_lab
    more = ns.superposition_data(2000, np.random.default_rng(42))
    np.testing.assert_array_equal(more.directions, data.directions)
    assert more.x.shape == (2000, 8)


# --- the seed lab reproduces the source's published figures --------------------------------


def test_seed_lab_reproduces_the_published_figures(seed_lab):
    data, params = seed_lab
    params = ns.copy_params(params)
    initial_W_dec = params["W_dec"].copy()
    history = ns.train_l1_sae(data.x, params, l1_coeff=5.0, lr=0.03, epochs=300)
    # the source's log lines at epochs 0, 100, 200
    assert [round(history[e]["recon"], 4) for e in (0, 100, 200)] == [1.4259, 0.2370, 0.1564]
    assert round(history[0]["total"], 4) == 1.9426
    _, z, _ = ns.forward(data.x, params)
    assert round(ns.loss_terms(data.x, params, 5.0)[1], 3) == 0.128
    assert round(float((z > 0).sum(axis=1).mean()), 1) == 18.9
    before = ns.direction_alignment(data.directions, initial_W_dec)
    after = ns.direction_alignment(data.directions, params["W_dec"])
    assert (round(before[0], 3), before[1]) == (0.798, 1)
    assert (round(after[0], 3), after[1]) == (0.799, 2)


def test_one_full_batch_step_is_well_under_a_millisecond(seed_lab):
    data, params = seed_lab
    timing = ns.time_full_batch_step(data.x, params, 5.0, repeats=300)
    assert timing["best"] < 1e-3, timing


# --- forward and backward -------------------------------------------------------------------


def test_forward_shapes_and_relu():
    x, params = small_problem()
    pre, z, x_hat = ns.forward(x, params)
    assert pre.shape == z.shape == (12, 7) and x_hat.shape == (12, 5)
    assert (z >= 0).all() and np.array_equal(z > 0, pre > 0)


@pytest.mark.parametrize("l1_coeff", [0.0, 5.0])
def test_backward_matches_torch_autograd(l1_coeff):
    x, params = small_problem(seed=3)
    pre, z, x_hat = ns.forward(x, params)
    manual = ns.backward(x, params, pre, z, x_hat, l1_coeff)
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    tx = torch.tensor(x)
    tz = torch.relu(tx @ t["W_enc"] + t["b_enc"])
    loss = ((tx - (tz @ t["W_dec"] + t["b_dec"])) ** 2).mean() + l1_coeff * tz.abs().mean()
    loss.backward()
    assert loss.item() == pytest.approx(ns.loss_terms(x, params, l1_coeff)[0], rel=1e-12)
    for name in ns.PARAM_NAMES:
        np.testing.assert_allclose(manual[name], t[name].grad.numpy(), rtol=1e-10, atol=1e-13)


def test_gradient_check_passes_for_every_parameter():
    x, params = small_problem(seed=4)
    errors = ns.gradient_check(x, params, l1_coeff=5.0)
    assert set(errors) == set(ns.PARAM_NAMES)
    assert max(errors.values()) < 1e-6, errors


def test_gradient_check_catches_a_wrong_backward():
    x, params = small_problem(seed=4)

    def no_mask(x, params, pre, z, x_hat, l1):
        return ns.backward(x, params, np.ones_like(pre), z, x_hat, l1)

    errors = ns.gradient_check(x, params, l1_coeff=5.0, backward_fn=no_mask)
    assert errors["W_enc"] > 1e-3 and errors["W_dec"] < 1e-6


def test_numerical_gradient_is_central_and_restores_the_array():
    a = np.array([0.3, -1.2, 2.0])
    before = a.copy()
    grad = ns.numerical_gradient(lambda: float(np.sum(a**3)), a, eps=1e-4)
    np.testing.assert_allclose(grad, 3 * before**2, rtol=1e-7)
    np.testing.assert_array_equal(a, before)


def test_relative_error():
    assert ns.relative_error(np.ones(3), np.ones(3)) == 0.0
    assert ns.relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert ns.relative_error(np.array([1.0]), np.array([-1.0])) == 1.0


def test_sgd_step_keeps_decoder_rows_at_unit_norm():
    x, params = small_problem()
    pre, z, x_hat = ns.forward(x, params)
    ns.sgd_step(params, ns.backward(x, params, pre, z, x_hat, 1.0), lr=0.5)
    np.testing.assert_allclose(np.linalg.norm(params["W_dec"], axis=1), 1.0)


def test_without_renormalisation_l1_shrinks_by_growing_the_decoder(seed_lab):
    data, params = seed_lab
    free, fixed = ns.copy_params(params), ns.copy_params(params)
    free_history = ns.train_l1_sae(
        data.x, free, l1_coeff=5.0, lr=0.3, epochs=300, renormalize=False
    )
    fixed_history = ns.train_l1_sae(data.x, fixed, l1_coeff=5.0, lr=0.3, epochs=300)
    norms = np.linalg.norm(free["W_dec"], axis=1)
    assert norms.mean() > 1.2
    assert free_history[-1]["sparsity"] < 0.85 * fixed_history[-1]["sparsity"]
    rescaled = np.mean(ns.forward(data.x, free)[1] * norms)  # z in units of unit-length rows
    assert rescaled > fixed_history[-1]["sparsity"]


# --- diagnostics ----------------------------------------------------------------------------


def test_direction_alignment_of_the_truth_and_of_its_negation(seed_lab):
    data, _ = seed_lab
    assert ns.direction_alignment(data.directions, data.directions) == (pytest.approx(1.0), 24)
    median, count = ns.direction_alignment(data.directions, -3 * data.directions[:10])
    assert count == 10 and median < 0.9


def test_firing_rates_and_dead_and_rare():
    z = np.array([[1.2, 0.0, 0.0, 0.0], [0.7, 0.3, 0.0, 0.0], [0, 0, 0, 0], [0, 0, 0, 0.5]])
    rates = ns.firing_rates(z)
    np.testing.assert_allclose(rates, [0.5, 0.25, 0.0, 0.25])
    dead, rare = ns.dead_and_rare(rates, rare_below=0.3)
    assert dead.tolist() == [2] and rare.tolist() == [1, 3]


def test_duplicate_pairs():
    W = np.array([[1.0, 0.0], [0.0, 1.0], [-0.99, 0.05], [0.7, 0.7]])
    assert ns.duplicate_pairs(W, 0.9).tolist() == [[0, 2]]


def test_shrinkage():
    x = np.random.default_rng(0).normal(size=(10, 3))
    assert ns.shrinkage(x, x) == pytest.approx(1.0)
    assert ns.shrinkage(x, 0.5 * x) == pytest.approx(0.5)


# --- encoders and the stronger trainer ------------------------------------------------------


def test_topk_keeps_at_most_k_positive_latents():
    x, params = small_problem(batch=40)
    _, z = ns.topk_encode(x, params, k=3)
    assert ((z > 0).sum(axis=1) <= 3).all() and (z >= 0).all()


def test_matching_pursuit_recovers_codes_on_an_orthonormal_dictionary():
    W_dec = np.eye(6)
    codes = np.zeros((3, 6))
    codes[0, [1, 4]] = [2.0, 0.5]
    codes[1, [0, 2]] = [1.0, 1.5]
    codes[2, 5] = 3.0
    for orthogonal in (False, True):
        np.testing.assert_allclose(ns.matching_pursuit(codes, W_dec, 2, orthogonal), codes)


def test_orthogonal_pursuit_refits_overlapping_directions():
    W_dec = ns.normalize_rows(np.array([[1.0, 0.0], [0.8, 0.6]]))
    x = np.array([[1.0, 0.0]]) + np.array([[0.8, 0.6]])
    np.testing.assert_allclose(ns.matching_pursuit(x, W_dec, 2, orthogonal=True), [[1.0, 1.0]])
    plain = ns.matching_pursuit(x, W_dec, 2, orthogonal=False)
    assert np.abs(plain @ W_dec - x).max() > 1e-3  # plain MP stops short after two picks


def test_adam_minimises_a_quadratic():
    params = {"W_dec": np.array([[3.0, -2.0]])}
    adam = ns.Adam(params, ("W_dec",))
    for _ in range(500):
        adam.step(params, {"W_dec": 2 * params["W_dec"]}, lr=0.05)
    assert np.abs(params["W_dec"]).max() < 0.05


def test_resample_dead_points_latents_at_the_residual():
    x, params = small_problem(batch=20)
    z = ns.topk_encode(x, params, 2)[1]
    adam = ns.Adam(params, ("W_enc", "b_enc", "W_dec"))
    adam.m["W_dec"][:] = 1.0
    ns.resample_dead(x, z, params, np.array([0, 3]), adam)
    np.testing.assert_allclose(np.linalg.norm(params["W_dec"][[0, 3]], axis=1), 1.0)
    np.testing.assert_allclose(params["W_enc"][:, [0, 3]], params["W_dec"][[0, 3]].T)
    assert (adam.m["W_dec"][[0, 3]] == 0).all() and (adam.m["W_dec"][1] == 1).all()


def test_iterative_encoder_beats_the_linear_one_on_the_same_data():
    data = ns.superposition_data(5000, np.random.default_rng(42))
    found = {}
    for encoder in ("topk", "omp"):
        params, history = ns.train_dictionary(
            data.x,
            d_sae=32,
            k=3,
            encoder=encoder,
            steps=300,
            directions=data.directions,
            log_every=100,
        )
        found[encoder] = ns.direction_alignment(data.directions, params["W_dec"])[1]
        assert history[-1]["recovered"] == found[encoder] and history[0]["step"] == 1
    assert found["omp"] >= 18 and found["omp"] > found["topk"] + 5, found


def test_training_is_deterministic():
    data = ns.superposition_data(500, np.random.default_rng(42))
    runs = [ns.train_dictionary(data.x, d_sae=24, k=2, encoder="mp", steps=30)[0] for _ in range(2)]
    np.testing.assert_array_equal(runs[0]["W_dec"], runs[1]["W_dec"])


def test_plots_draw_the_data():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    from labhelpers.plotting import COLORS

    # one line per run, in its own colour, step against recovered; the target as a dashed line
    histories = {
        "mp": [{"step": 1, "recovered": 3}, {"step": 2, "recovered": 5}],
        "omp": [
            {"step": 1, "recovered": 4},
            {"step": 2, "recovered": 9},
            {"step": 3, "recovered": 12},
        ],
    }
    ax = ns.plot_alignment_history(histories, n_true=24)
    runs, target = ax.get_lines()[:2], ax.get_lines()[2:]
    assert [line.get_label() for line in runs] == ["mp", "omp"]
    for line, history in zip(runs, histories.values()):
        assert list(line.get_xdata()) == [r["step"] for r in history]
        assert list(line.get_ydata()) == [r["recovered"] for r in history]
    assert to_hex(runs[0].get_color()) != to_hex(runs[1].get_color())
    assert len(target) == 1 and list(target[0].get_ydata()) == [24, 24]
    assert ax.get_ylim() == (0, 25)

    # one bar per latent, sorted by rate; the dead one at the floor, in red, the others not
    ax = ns.plot_firing_rates(np.array([0.001, 0.0, 0.5]))
    bars = ax.patches
    assert [bar.get_height() for bar in bars] == pytest.approx([0.5, 0.001, 1e-4])
    colours = [to_hex(bar.get_facecolor()) for bar in bars]
    assert colours == [COLORS[0], COLORS[0], COLORS[1]] and COLORS[1] == "#d62728"  # red
    assert ax.get_yscale() == "log"

    # one line per model, its best cosines sorted from high to low; the threshold dashed
    best = {"a": np.array([0.5, 0.95, 0.7]), "b": np.array([0.2, 0.99])}
    ax = ns.plot_best_cosines(best, threshold=0.8)
    lines = ax.get_lines()
    assert [line.get_label() for line in lines[:2]] == ["a", "b"]
    assert list(lines[0].get_ydata()) == [0.95, 0.7, 0.5]
    assert list(lines[1].get_ydata()) == [0.99, 0.2]
    assert len(lines) == 3 and list(lines[2].get_ydata()) == [0.8, 0.8]
    plt.close("all")
