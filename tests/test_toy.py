"""labhelpers.toy: data, models, training, measurements and figures of the toy models."""

import math

import matplotlib
import pytest
import torch

from labhelpers import toy

matplotlib.use("Agg")


def polygon(n: int, radius: float = 1.0) -> torch.Tensor:
    """n unit-ish features evenly spread round a circle, as W: [1, 2, n]."""
    theta = torch.arange(n) * 2 * math.pi / n
    return radius * torch.stack([theta.cos(), theta.sin()])[None]


# --- data --------------------------------------------------------------------------------


def test_feature_probability_is_one_minus_sparsity():
    assert torch.allclose(toy.feature_probability([0.0, 0.9]), torch.tensor([1.0, 0.1]))


def test_generate_batch_fires_at_the_right_rate_with_uniform_magnitudes():
    probability = torch.tensor([1.0, 0.3, 0.05])
    x = toy.generate_batch(20_000, 4, probability, torch.Generator().manual_seed(0))
    assert x.shape == (20_000, 3, 4)
    assert x.min() >= 0 and x.max() <= 1
    rate = (x > 0).float().mean(dim=(0, 2))
    assert torch.allclose(rate, probability, atol=0.01)
    firing = x[:, 1][x[:, 1] > 0]  # magnitudes of the features that fire: uniform on [0, 1]
    assert abs(firing.mean().item() - 0.5) < 0.01
    assert abs((firing < 0.25).float().mean().item() - 0.25) < 0.02


def test_generate_batch_repeats_with_the_same_seed():
    p = torch.tensor([0.5, 0.5])
    first = toy.generate_batch(8, 3, p, torch.Generator().manual_seed(3))
    again = toy.generate_batch(8, 3, p, torch.Generator().manual_seed(3))
    other = toy.generate_batch(8, 3, p, torch.Generator().manual_seed(4))
    assert torch.equal(first, again) and not torch.equal(first, other)


# --- models ------------------------------------------------------------------------------


def test_relu_output_forward_matches_a_per_instance_loop():
    g = torch.Generator().manual_seed(0)
    W, b, x = torch.randn(3, 2, 5, generator=g), torch.randn(3, 5, generator=g), torch.rand(4, 3, 5)
    out = toy.relu_output_forward(W, b, x)
    for i in range(3):
        expected = torch.relu(x[:, i] @ W[i].T @ W[i] + b[i])
        assert torch.allclose(out[:, i], expected, atol=1e-6)


def test_relu_hidden_forward_clips_the_hidden_layer():
    W = torch.tensor([[[1.0, -1.0]]])  # one neuron: +feature 0, -feature 1
    b = torch.zeros(1, 2)
    x = torch.tensor([[[0.0, 1.0]]])  # only feature 1 is on
    # Linear hidden layer: h = -1, read back as W^T h = [-1, 1]; the ReLU hidden layer stops it.
    assert torch.allclose(toy.relu_output_forward(W, b, x), torch.tensor([[[0.0, 1.0]]]))
    assert torch.allclose(toy.relu_hidden_forward(W, b, x), torch.zeros(1, 1, 2))


def test_importance_weighted_loss_by_hand():
    x = torch.tensor([[[1.0, 1.0]], [[0.0, 0.0]]])  # batch 2, 1 instance, 2 features
    x_hat = torch.tensor([[[0.0, 0.0]], [[0.0, 2.0]]])
    importance = torch.tensor([1.0, 0.5])
    # sample 1: 1 * 1 + 0.5 * 1 = 1.5; sample 2: 0.5 * 4 = 2; mean 1.75
    assert torch.allclose(toy.importance_weighted_loss(x_hat, x, importance), torch.tensor([1.75]))
    assert toy.importance_weighted_loss(x, x, importance).item() == 0


def test_toy_model_shapes_and_seeded_init():
    model = toy.ToyModel(5, 2, 3, seed=1)
    assert model.W.shape == (3, 2, 5) and model.b_final.shape == (3, 5)
    assert torch.equal(model.W, toy.ToyModel(5, 2, 3, seed=1).W)
    assert not torch.equal(model.W, toy.ToyModel(5, 2, 3, seed=2).W)
    assert model(torch.rand(7, 3, 5)).shape == (7, 3, 5)


def test_train_toy_learns_the_identity_when_there_is_room():
    # Two features, two dimensions: no reason for superposition, so W^T W -> identity.
    # (Seed 0 starts its first instance in a local minimum: that is what best_of_seeds is for.)
    model = toy.ToyModel(2, 2, 2, seed=1)
    start = toy.importance_weighted_loss(model(x := torch.rand(512, 2, 2)), x, torch.ones(2))
    final = toy.train_toy(
        model, torch.tensor([0.5, 0.2]), torch.ones(2), steps=400, batch_size=128, lr=1e-2
    )
    assert (final < 0.01).all() and (final < start.detach()).all()
    gram = toy.interference(model.W)
    assert torch.allclose(gram, torch.eye(2).expand(2, 2, 2), atol=0.1)


def test_train_toy_restores_the_thread_count():
    threads = torch.get_num_threads()
    toy.train_toy(toy.ToyModel(3, 2, 1), torch.tensor([0.5]), torch.ones(3), steps=2, batch_size=4)
    assert torch.get_num_threads() == threads


def test_best_of_seeds_picks_the_lowest_loss_in_each_group():
    loss = torch.tensor([0.3, 0.1, 0.2, 5.0, 6.0, 4.0])
    assert toy.best_of_seeds(loss, 3).tolist() == [1, 5]


# --- measurements --------------------------------------------------------------------------


def test_dimensionality_of_known_geometries():
    # An antipodal pair (1/2 each), an orthogonal feature (1) and a dead feature (0).
    W = torch.tensor([[[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]])
    assert torch.allclose(toy.feature_dimensionality(W), torch.tensor([[0.5, 0.5, 1.0, 0.0]]))
    assert torch.allclose(toy.dimensions_per_feature(W), torch.tensor([2 / 3]))
    # A pentagon: each feature gets 2/5 of a dimension, and so does the model as a whole.
    pentagon = polygon(5)
    assert torch.allclose(toy.feature_dimensionality(pentagon), torch.full((1, 5), 0.4), atol=1e-5)
    assert torch.allclose(toy.dimensions_per_feature(pentagon), torch.tensor([0.4]))


def test_dimensionality_does_not_depend_on_the_norm():
    assert torch.allclose(
        toy.feature_dimensionality(polygon(5, 3.0)), toy.feature_dimensionality(polygon(5))
    )


def test_norms_interference_and_superposition():
    W = torch.tensor([[[1.0, -1.0, 0.0], [0.0, 0.0, 2.0]]])
    assert torch.allclose(toy.feature_norms(W), torch.tensor([[1.0, 1.0, 2.0]]))
    gram = toy.interference(W)
    assert torch.allclose(gram, gram.transpose(1, 2))
    assert torch.allclose(gram.diagonal(dim1=1, dim2=2), toy.feature_norms(W) ** 2)
    assert gram[0, 0, 1].item() == -1.0
    # The pair shares its direction with each other; the third feature is alone.
    assert torch.allclose(toy.superposition(W), torch.tensor([[1.0, 1.0, 0.0]]))


def test_geometry_angles():
    (gaps,) = toy.geometry_angles(polygon(5))
    assert gaps.shape == (5,) and abs(gaps - 72).max() < 1e-4
    W = torch.tensor([[[1.0, 0.0, 0.1], [0.0, 1.0, 0.0]]])  # a weak third feature is skipped
    (gaps,) = toy.geometry_angles(W)
    assert sorted(gaps.round(4).tolist()) == [90.0, 270.0]
    lone, none = toy.geometry_angles(torch.tensor([[[0.0, 0.1], [1.0, 0.0]], [[0.1, 0.0]] * 2]))
    assert lone.tolist() == [360.0] and none.shape == (0,)  # the gap wraps round to itself


def test_neuron_responses_and_features():
    W = torch.tensor([[[0.9, 0.7, -1.0], [0.0, 0.2, 1.0]]])  # neuron 0 is polysemantic
    responses = toy.neuron_responses(W)
    assert torch.allclose(responses, torch.relu(W))
    assert toy.neuron_features(W, 0.5) == [[[0, 1], [2]]]


# --- figures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plot", "args", "n_axes"),
    [
        (
            toy.plot_feature_geometry,
            (polygon(5).repeat(3, 1, 1), 0.9 ** torch.arange(5.0), "abc"),
            3,
        ),
        (toy.plot_feature_norms, (torch.randn(4, 3, 10), ["0", "0.5", "0.9", "0.99"]), 2),
        (toy.plot_interference, (torch.randn(2, 3, 10), ["dense", "sparse"]), 4),
        (toy.plot_dimensionality, (torch.randn(3, 2, 6), [0.0, 0.5, 0.9]), 1),
        (toy.plot_neurons, (torch.randn(2, 3, 6), ["a", "b"]), 3),
    ],
)
def test_plots_draw_one_panel_per_instance(plot, args, n_axes):
    import matplotlib.pyplot as plt

    fig = plot(*args)
    assert len([ax for ax in fig.axes if ax.axison]) == n_axes
    plt.close(fig)
