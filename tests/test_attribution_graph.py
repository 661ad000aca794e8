"""Attribution graphs on the tiny model with random transcoders, and on a hand-built graph."""

import matplotlib
import pytest
import torch

from labhelpers import attribution_graph as ag
from labhelpers.sae import SAEConfig
from labhelpers.transcoder import Transcoder

matplotlib.use("Agg")
pytestmark = pytest.mark.usefixtures("one_thread")
TARGET = (5, 7)  # logit(5) - logit(7) at the last position


def random_transcoder(d_model, seed):
    tc = Transcoder(SAEConfig(d_in=d_model, d_sae=64, k=8, seed=seed))
    with torch.no_grad():
        tc.W_dec.mul_(0.5)  # unit-norm rows: outputs on the MLP output's scale
    return tc.eval()


@pytest.fixture(scope="module")
def setup(tiny_model, random_tokens):
    transcoders = [
        random_transcoder(tiny_model.cfg.d_model, s) for s in range(tiny_model.cfg.n_layers)
    ]
    tokens = random_tokens(1, 9, seed=3)[0]
    return (
        tiny_model,
        transcoders,
        tokens,
        ag.build_graph(tiny_model, transcoders, tokens, TARGET, 32),
    )


def test_every_target_is_the_sum_of_its_edges_and_its_values_are_the_models(setup):
    model, transcoders, tokens, graph = setup
    targets = [i for i, n in enumerate(graph.nodes) if n.kind in ("latent", "logit")]
    explained = graph.adjacency[targets].sum(1) + graph.constant[targets]
    torch.testing.assert_close(explained, graph.values[targets], atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens[None])
    assert float(graph.values[graph.logit]) == pytest.approx(
        float(logits[0, -1, TARGET[0]] - logits[0, -1, TARGET[1]]), abs=1e-4
    )
    for i in targets[:-1:7]:
        node = graph.nodes[i]
        z = transcoders[node.layer].encode(cache[f"blocks.{node.layer}.mlp.hook_in"][0, node.pos])
        assert float(graph.values[i]) == pytest.approx(float(z[node.feature].detach()), abs=1e-4)
    assert graph.adjacency.abs().sum() > 1 and graph.constant[targets].abs().max() > 1e-3


def test_edges_only_point_forward(setup):
    *_, graph = setup
    assert torch.equal(graph.adjacency, graph.adjacency.tril(-1))
    for t, s in graph.adjacency.nonzero().tolist()[:200]:
        source, target = graph.nodes[s], graph.nodes[t]
        assert source.pos <= target.pos
        if target.kind == "latent" and source.kind in ("latent", "error"):
            assert source.layer < target.layer


def hand_built_graph():
    """e -> a -> b -> logit and a -> logit. Contributions: a gets 2 from e; b gets 0.5
    from a (derivative 0.25, a = 2); the logit gets 1 from a and 3 from b (b = 1)."""
    nodes = [
        ag.GraphNode("embed", -1, 1),
        ag.GraphNode("latent", 0, 1, 0),
        ag.GraphNode("latent", 1, 1, 0),
        ag.GraphNode("logit", -1, 1),
    ]
    adjacency = torch.zeros(4, 4)
    adjacency[1, 0], adjacency[2, 1], adjacency[3, 1], adjacency[3, 2] = 2.0, 0.5, 1.0, 3.0
    values = torch.tensor([0.0, 2.0, 1.0, 4.0])
    return ag.AttributionGraph(
        torch.zeros(2, dtype=torch.long), nodes, adjacency, values, torch.zeros(4)
    )


def test_total_effects_multiply_derivatives_along_paths():
    # d logit / d b = 3; d logit / d a = 1/2 + 3 * 0.25 = 1.25; zeroing a drops it 1.25 * 2.
    effects = ag.AttributionGraph.total_effects(hand_built_graph())
    torch.testing.assert_close(effects, torch.tensor([2.5, 2.5, 3.0, 0.0]))


def test_influence_adds_up_normalised_shares_along_paths():
    # The logit takes 1/4 from a and 3/4 from b; b takes everything from a, a from e.
    influence = hand_built_graph().influence()
    torch.testing.assert_close(influence, torch.tensor([1.0, 1.0, 0.75, 0.0]))


def test_ablation_check_is_exact_where_nothing_but_frozen_parts_lie_downstream(setup):
    """A last-layer latent at the last position reaches the logit through the final
    LayerNorm only: with its scale frozen the graph is exact; left free, it is not."""
    model, transcoders, tokens, graph = setup
    last_layer = model.cfg.n_layers - 1
    ids = [
        i
        for i, n in enumerate(graph.nodes)
        if n.kind == "latent" and n.layer == last_layer and n.pos == len(tokens) - 1
    ]
    assert ids
    predicted, real = ag.ablation_check(model, transcoders, graph, TARGET, ids, frozen=True)
    torch.testing.assert_close(real, predicted, atol=1e-4, rtol=1e-4)
    _, free = ag.ablation_check(model, transcoders, graph, TARGET, ids, frozen=False)
    assert (free - predicted).abs().max() > 1e-3


def test_ablation_check_ablates_latents_only(setup):
    model, transcoders, _, graph = setup
    with pytest.raises(ValueError, match="only latents"):
        ag.ablation_check(model, transcoders, graph, TARGET, [graph.logit])


def test_prune_keeps_the_most_influential_latents_and_plot_draws_them(setup):
    model, _, tokens, graph = setup
    kept = ag.prune(graph, 5)
    influence = graph.influence()
    latents = [i for i in kept if graph.nodes[i].kind == "latent"]
    others = [i for i, n in enumerate(graph.nodes) if n.kind == "latent" and i not in kept]
    assert len(latents) == 5 and graph.logit in kept
    assert min(influence[latents]) >= max(influence[others])
    labels = [model.tokenizer.decode([int(t)]) for t in tokens[1:]]
    ax = ag.plot_graph(graph, kept, labels)
    assert len(ax.collections) == len(kept)  # one marker per node
    # the latents are labelled; the logit is not (its row is named on the y axis)
    assert sorted(t.get_text() for t in ax.texts) == sorted(graph.nodes[i].label for i in latents)
    matplotlib.pyplot.close("all")
