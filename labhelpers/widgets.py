"""Browse SAE features: an ipywidgets browser and a static HTML dashboard.

Both show the same *feature card*, built from the reading tools in
``labhelpers.features``: the strongest examples, examples from across the activation
range, the activation histogram, the tokens the decoder direction promotes and
suppresses, concept scores and decoder neighbours.

* ``feature_data`` computes everything once into a ``FeatureData``;
* ``feature_card_html`` renders one feature as self-contained HTML;
* ``export_dashboard`` writes one HTML file for a list of features that any browser opens
  from disk: no server, no network, images inlined as data URIs;
* ``browse`` is the interactive browser in a notebook, and plain text elsewhere.
"""

from __future__ import annotations

import base64
import html
import io
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from matplotlib.figure import Figure

from labhelpers import features as F
from labhelpers import metrics

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from labhelpers.sae import SAE

# A row of token ids -> the text of each token; or a vocabulary list indexed by token id.
TokenStrings = Callable[[torch.Tensor], list[str]] | Sequence[str]
LogitEffects = dict[
    str, list[tuple[str, float]]
]  # {"promoted": [(token, value)], "suppressed": ...}


@dataclass
class FeatureData:
    """What the cards of a set of features show, computed once.

    tokens: [n_rows, context] token ids.
    acts: [n_rows, context, n_features] latent activations; column j is ``feature_ids[j]``.
    token_strings: a row of ids -> one string per token, or a vocabulary list.
    logit_effects: feature -> ``features.logit_effects`` output (optional).
    concept_scores: feature -> {concept: score}, e.g. F1 against corpus labels (optional).
    sae: the SAE the features belong to; when given, cards list decoder neighbours.
    """

    tokens: torch.Tensor
    acts: torch.Tensor
    feature_ids: list[int]
    token_strings: TokenStrings
    logit_effects: dict[int, LogitEffects] = field(default_factory=dict)
    concept_scores: dict[int, dict[str, float]] = field(default_factory=dict)
    sae: SAE | None = None

    def __post_init__(self) -> None:
        self.feature_ids = [int(f) for f in self.feature_ids]
        if self.acts.shape != (*self.tokens.shape, len(self.feature_ids)):
            raise ValueError(
                f"acts has shape {tuple(self.acts.shape)}; expected tokens' shape "
                f"{tuple(self.tokens.shape)} plus one column per feature ({len(self.feature_ids)})"
            )

    def feature_acts(self, feature: int) -> torch.Tensor:
        """One feature's activations, ``[n_rows, context]``."""
        return self.acts[..., self.feature_ids.index(feature)]

    def strings(self, row: int) -> list[str]:
        """The text of each token in row ``row``."""
        ids = self.tokens[row]
        if callable(self.token_strings):
            return list(self.token_strings(ids))
        return [self.token_strings[int(t)] for t in ids]


def concept_scores(
    acts: torch.Tensor,
    labels: torch.Tensor | np.ndarray,
    feature_ids: Sequence[int],
    concepts: Sequence[str] | None = None,
) -> dict[int, dict[str, float]]:
    """F1 of "the feature fires" as a detector of each concept, for each feature.

    A quick read for the browser: the given features, at threshold 0, on the text passed
    in. ``metrics.concept_scores`` is the test: each concept's best unit and threshold,
    chosen on one split and scored on held-out text.

    acts: [n_rows, context, n_features]; labels: [n_rows, context, n_concepts] bool, e.g.
    ``corpus.token_labels`` packed like the tokens. ``concepts`` names the label columns
    (``corpus.CONCEPTS`` by default).
    """
    if concepts is None:
        from labhelpers.corpus import CONCEPTS

        concepts = CONCEPTS
    labels = torch.as_tensor(np.asarray(labels, dtype=bool)).reshape(-1, len(concepts))
    f1 = metrics.f1_matrix(acts.reshape(-1, len(feature_ids)), labels)["f1"]
    return {
        int(f): {c: float(f1[j, i]) for i, c in enumerate(concepts)}
        for j, f in enumerate(feature_ids)
    }


def feature_data(
    model: TransformerBridge,
    sae: SAE,
    hook_name: str,
    tokens: torch.Tensor,
    feature_ids: Sequence[int],
    labels: torch.Tensor | np.ndarray | None = None,
    k_logits: int = 10,
    batch_size: int = 16,
) -> FeatureData:
    """Run the model over ``tokens: [n_rows, context]`` and gather the cards' contents.

    ``labels: [n_rows, context, len(corpus.CONCEPTS)]``, when given, adds concept F1 scores.
    """
    feature_ids = [int(f) for f in feature_ids]
    acts = F.latent_acts(model, sae, hook_name, tokens, feature_ids, batch_size=batch_size)
    return FeatureData(
        tokens=tokens.cpu(),
        acts=acts,
        feature_ids=feature_ids,
        token_strings=lambda row: F.token_strings(model, row),
        logit_effects={f: F.logit_effects(model, sae, f, k=k_logits) for f in feature_ids},
        concept_scores=concept_scores(acts, labels, feature_ids) if labels is not None else {},
        sae=sae,
    )


# --------------------------------------------------------------------------------------
# One feature as HTML
# --------------------------------------------------------------------------------------

_PANEL = "flex:1 1 300px;min-width:260px"
_CELL = "padding:1px 8px;text-align:left"


def _stats(acts: torch.Tensor) -> tuple[float, float]:
    """Firing rate and maximum activation of ``acts: [n_rows, context]``."""
    return float((acts > 0).float().mean()), float(acts.max())


def _token(text: str) -> str:
    """A token as escaped HTML with its whitespace visible."""
    text = html.escape(text).replace("\n", "⏎")
    return f'<code style="white-space:pre;background:#f3f3f3">{text}</code>'


def histogram_png(acts: torch.Tensor, title: str = "") -> str:
    """``features.plot_histogram`` of ``acts: [n_rows, context]`` as a PNG data URI.

    Drawn on a bare ``Figure`` (not pyplot) so that a notebook does not also show it.
    """
    fig = Figure(figsize=(5, 3), dpi=80)
    F.plot_histogram(acts, ax=fig.subplots(), title=title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})  # no version: same bytes
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _examples_html(
    data: FeatureData, acts: torch.Tensor, examples: Sequence[F.Example], scale: float
) -> str:
    """Each example's context from one feature's ``acts: [n_rows, context]``, all shaded on
    one ``scale`` so that examples compare."""
    rows = []
    for ex in examples:
        context = F.render_html(
            data.strings(ex.row), acts[ex.row].tolist(), ex.position, scale=scale
        )
        rows.append(
            f'<div style="display:flex;gap:10px;align-items:baseline" '
            f'title="row {ex.row}, position {ex.position}">'
            f'<code style="min-width:4em;color:#555">{ex.activation:.2f}</code>{context}</div>'
        )
    return "".join(rows) or "<div><em>no tokens where it fires</em></div>"


def _logit_table(effects: LogitEffects) -> str:
    rows = "".join(
        f'<tr><td style="{_CELL}">{_token(up)}</td><td style="{_CELL}">{u:+.2f}</td>'
        f'<td style="{_CELL}">{_token(down)}</td><td style="{_CELL}">{d:+.2f}</td></tr>'
        for (up, u), (down, d) in zip(effects["promoted"], effects["suppressed"])
    )
    head = f'<tr><th style="{_CELL}" colspan="2">promoted</th><th style="{_CELL}" colspan="2">suppressed</th></tr>'
    return f'<table style="border-collapse:collapse">{head}{rows}</table>'


def _concept_table(scores: dict[str, float]) -> str:
    rows = "".join(
        f'<tr><td style="{_CELL}">{html.escape(name)}</td><td style="{_CELL}">{score:.2f}</td>'
        f'<td style="{_CELL}"><div style="width:{100 * max(min(score, 1.0), 0.0):.0f}px;'
        f'height:10px;background:#1f77b4"></div></td></tr>'
        for name, score in sorted(scores.items(), key=lambda item: -item[1])
    )
    return f'<table style="border-collapse:collapse">{rows}</table>'


def _neighbours_html(data: FeatureData, feature: int, links: bool) -> str:
    items = []
    for other, cos in F.decoder_neighbours(data.sae, feature, k=5):
        name = f"feature {other}"
        if links and other in data.feature_ids:  # a card for it is in the same page
            name = f'<a href="#feature-{other}">{name}</a>'
        items.append(f"<li>{name}: cosine {cos:.2f}</li>")
    return "<ul>" + "".join(items) + "</ul>"


def feature_card_html(
    data: FeatureData,
    feature: int,
    k: int = 10,
    n_bins: int = 5,
    per_bin: int = 2,
    links: bool = False,
) -> str:
    """One feature's card as self-contained HTML (inline styles, the histogram inlined).

    ``k`` top examples and ``per_bin`` examples from each of ``n_bins`` activation bins;
    ``links`` turns decoder neighbours into links to other cards on the same page.
    """
    acts = data.feature_acts(feature)
    rate, peak = _stats(acts)
    scale = max(peak, 1e-6)
    top = F.top_examples(acts, k)

    panels = []
    if rate > 0:
        src = histogram_png(acts, title=f"feature {feature}")
        panels.append(
            (
                "Activations",
                f'<img alt="histogram of feature {feature}" src="{src}" style="max-width:100%">',
            )
        )
    if feature in data.logit_effects:
        panels.append(("Logit effects (direct path)", _logit_table(data.logit_effects[feature])))
    if data.concept_scores.get(feature):
        panels.append(("Concept scores", _concept_table(data.concept_scores[feature])))
    if data.sae is not None:
        panels.append(("Decoder neighbours", _neighbours_html(data, feature, links)))
    panel_html = "".join(
        f'<div style="{_PANEL}"><h4 style="margin:4px 0">{html.escape(name)}</h4>{body}</div>'
        for name, body in panels
    )

    bins = F.quantile_examples(acts, n_bins=n_bins, per_bin=per_bin)
    bin_html = "".join(
        f'<h4 style="margin:8px 0 2px">{html.escape(name)}</h4>'
        + _examples_html(data, acts, examples, scale)
        for name, examples in reversed(bins.items())  # strongest bin first, like the top list
    )
    return (
        f'<section id="feature-{feature}" class="feature-card" style="border:1px solid #ccc;'
        f'border-radius:6px;padding:8px 14px;margin:14px 0">'
        f'<h2 style="margin:4px 0">Feature {feature}</h2>'
        f'<div style="color:#555">fires on {rate:.2%} of {acts.numel():,} tokens; '
        f"max activation {peak:.2f}</div>"
        f'<div style="display:flex;flex-wrap:wrap;gap:16px;margin:8px 0">{panel_html}</div>'
        f'<h3 style="margin:8px 0 4px">Top {len(top)} examples</h3>'
        f"{_examples_html(data, acts, top, scale)}"
        f'<h3 style="margin:8px 0 4px">Examples across the activation range</h3>'
        f"{bin_html or '<div><em>no tokens where it fires</em></div>'}"
        "</section>"
    )


# --------------------------------------------------------------------------------------
# A list of features as one HTML file
# --------------------------------------------------------------------------------------

# default-src 'none': the page may load nothing at all; images only from data URIs.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_STYLE = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1150px;"
    "margin:24px auto;padding:0 16px;color:#222}"
    "nav ul{columns:3;list-style:none;padding:0}a{color:#1f77b4}"
)


def dashboard_html(data: FeatureData, title: str = "SAE feature dashboard") -> str:
    """A full HTML page: a table of contents and one card per feature in ``data``."""
    contents = []
    for feature in data.feature_ids:
        rate, peak = _stats(data.feature_acts(feature))
        contents.append(
            f'<li><a href="#feature-{feature}">feature {feature}</a> '
            f"({rate:.2%}, max {peak:.2f})</li>"
        )
    cards = "\n".join(feature_card_html(data, f, links=True) for f in data.feature_ids)
    n_rows, context = data.tokens.shape
    title = html.escape(title)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{title}</h1>
<p>{len(data.feature_ids)} features, read on {n_rows:,} rows of {context} tokens.
Each token is shaded by the feature's activation (hover for the value); the chosen
token is outlined in red.</p>
<nav><h2>Features</h2><ul>{"".join(contents)}</ul></nav>
{cards}
</body>
</html>
"""


def export_dashboard(
    data: FeatureData, path: str | Path, title: str = "SAE feature dashboard"
) -> Path:
    """Write ``dashboard_html`` to ``path`` (UTF-8) and return the path.

    The file needs no server and no network: open it from disk in any browser.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dashboard_html(data, title), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------
# The browser
# --------------------------------------------------------------------------------------


def feature_text(data: FeatureData, feature: int, k: int = 5) -> str:
    """A plain-text card: statistics, the top ``k`` examples, logit effects, concepts."""
    acts = data.feature_acts(feature)
    rate, peak = _stats(acts)
    lines = [f"feature {feature}: fires on {rate:.2%} of tokens, max activation {peak:.2f}"]
    for ex in F.top_examples(acts, k):
        context = F.render_text(data.strings(ex.row), acts[ex.row].tolist(), ex.position)
        lines.append(f"  {ex.activation:6.2f}  {context}")
    if feature in data.logit_effects:
        for direction, pairs in data.logit_effects[feature].items():
            lines.append(f"  {direction}: " + " ".join(repr(token) for token, _ in pairs))
    if data.concept_scores.get(feature):
        best = sorted(data.concept_scores[feature].items(), key=lambda item: -item[1])[:3]
        lines.append("  concepts: " + ", ".join(f"{name} {score:.2f}" for name, score in best))
    return "\n".join(lines)


def in_kernel() -> bool:
    """True inside a Jupyter kernel (JupyterLab, Notebook, VS Code, Colab, nbval), False in
    plain Python or a terminal IPython. Whether the front end can draw widgets cannot be
    known from the kernel; ``FeatureBrowser`` carries a static copy for those that cannot."""
    if "IPython" not in sys.modules:  # nothing imported IPython: certainly no kernel
        return False
    from IPython import get_ipython

    return hasattr(get_ipython(), "kernel")


def can_draw() -> bool:
    """Whether to offer a widget: ipywidgets is installed and this runs inside a kernel."""
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return in_kernel()


class FeatureBrowser:
    """A drop-down over the features and the chosen feature's card.

    ``widget`` is the ipywidgets box. Displaying the browser sends both the widget and a
    static HTML copy of the first card: a front end with widget support draws the widget,
    one without (GitHub, nbviewer without saved widget state, a widget-less viewer) shows
    the static card instead.
    """

    def __init__(self, data: FeatureData) -> None:
        import ipywidgets

        self.data = data
        self.picker = ipywidgets.Dropdown(
            options=[(f"feature {f}", f) for f in data.feature_ids], description="feature"
        )
        self.card = ipywidgets.HTML(feature_card_html(data, data.feature_ids[0]))
        self.picker.observe(lambda change: self.show(change["new"]), names="value")
        self.widget = ipywidgets.VBox([self.picker, self.card])

    def show(self, feature: int) -> None:
        """Show ``feature``'s card."""
        if self.picker.value != feature:
            self.picker.value = feature  # calls show again through observe
            return
        self.card.value = feature_card_html(self.data, feature)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/html"] = feature_card_html(self.data, self.data.feature_ids[0])
        return bundle


def browse(data: FeatureData, static: bool | None = None) -> FeatureBrowser | None:
    """Browse the features in ``data``: pick one, see its card.

    ``static=None`` decides by itself: inside a Jupyter kernel with ipywidgets installed it
    returns a ``FeatureBrowser`` (the widget, plus a static card for viewers that cannot
    draw widgets); elsewhere (plain Python, a terminal) it prints a text card per feature
    and returns None. ``static=True`` forces the static output (HTML cards in a kernel,
    text outside); ``static=False`` forces the widget.
    """
    if static is None:
        static = not can_draw()
    if not static:
        return FeatureBrowser(data)
    if in_kernel():
        from IPython.display import HTML, display

        display(HTML("".join(feature_card_html(data, f) for f in data.feature_ids)))
    else:
        print("\n\n".join(feature_text(data, f) for f in data.feature_ids))
    return None
