"""The feature browser and the HTML dashboard, on hand-built activations (no model needed)."""

import html.parser
import sys
import types

import numpy as np
import pytest
import torch

from labhelpers import widgets as W
from labhelpers.sae import SAEConfig, TopKSAE

VOCAB = ["<script>", " the", " cat", "\n", " naïve", " 東京", " &amp;", " sat"] + [
    f" w{i}" for i in range(24)
]
FEATURES = [3, 7, 11]


def make_data(with_sae: bool = True, **kwargs) -> W.FeatureData:
    """8 rows of 12 tokens; feature 3 fires hardest on '<script>', feature 11 never fires."""
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, len(VOCAB), (8, 12), generator=gen)
    tokens[2, 5] = 0  # '<script>'
    acts = torch.rand(8, 12, 3, generator=gen) * (torch.rand(8, 12, 3, generator=gen) < 0.3)
    acts[..., 2] = 0.0
    acts[2, 5, 0] = 5.0
    effects = {
        f: {"promoted": [("<b>", 1.5), (" cat", 1.0)], "suppressed": [(" dog", -1.2), ("\n", -0.5)]}
        for f in FEATURES[:2]
    }
    defaults = dict(
        tokens=tokens,
        acts=acts,
        feature_ids=FEATURES,
        token_strings=VOCAB,
        logit_effects=effects,
        concept_scores={3: {"credential": 0.91, "shell": 0.12}},
        sae=TopKSAE(SAEConfig(d_in=16, d_sae=32, k=4)) if with_sae else None,
    )
    return W.FeatureData(**{**defaults, **kwargs})


VOID = {"meta", "img", "br", "hr", "input", "link", "wbr", "col", "area", "base", "source"}


class _Checker(html.parser.HTMLParser):
    """Records the doctype, tags, attributes and nesting errors of a document."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.doctype, self.stack, self.errors, self.starts, self.text = None, [], [], [], ""
        self.attrs = []

    def handle_decl(self, decl):
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        self.starts.append(tag)
        self.attrs.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.starts.append(tag)
        self.attrs.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag in VOID:
            self.errors.append(f"end tag for void element <{tag}>")
        elif not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text += data


def parse(document: str) -> _Checker:
    checker = _Checker()
    checker.feed(document)
    checker.close()
    return checker


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    path = W.export_dashboard(make_data(), tmp_path_factory.mktemp("dash") / "features.html")
    return path.read_bytes().decode("utf-8")  # raises if not valid UTF-8


def test_checker_catches_unbalanced_tags():
    assert parse("<div><span></div></span>").errors
    assert parse("<div><p>x</p></div>").errors == []


def test_dashboard_is_valid_html(dashboard):
    checker = parse(dashboard)
    assert checker.doctype.lower() == "doctype html"
    assert checker.errors == [] and checker.stack == []
    assert checker.starts[:2] == ["html", "head"]
    assert ("meta", {"charset": "utf-8"}) in checker.attrs
    assert checker.starts.count("html") == checker.starts.count("body") == 1
    ids = [a["id"] for _, a in checker.attrs if "id" in a]
    assert len(ids) == len(set(ids))  # anchors are unique


def test_dashboard_has_one_card_per_feature_and_a_contents_link_to_each(dashboard):
    checker = parse(dashboard)
    cards = [a["id"] for tag, a in checker.attrs if tag == "section"]
    assert cards == [f"feature-{f}" for f in FEATURES]
    links = [a["href"] for tag, a in checker.attrs if tag == "a"]
    assert all(f"#feature-{f}" in links for f in FEATURES)
    assert all(link.startswith("#") for link in links)  # in-page only


def test_dashboard_is_self_contained(dashboard):
    for reference in ("http://", "https://", 'src="/', 'href="/', "//cdn", "<script", "<link"):
        assert reference not in dashboard
    checker = parse(dashboard)
    sources = [a["src"] for tag, a in checker.attrs if tag == "img"]
    # features 3 and 7 fire (a histogram each), feature 11 never does (none)
    assert len(sources) == 2 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "default-src 'none'" in dashboard  # and the browser is told to load nothing else


def test_histogram_is_a_real_png(dashboard):
    import base64

    src = W.histogram_png(make_data().feature_acts(3))
    png = base64.b64decode(src.split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert src == W.histogram_png(make_data().feature_acts(3))  # deterministic bytes


def test_tokens_and_titles_are_escaped(tmp_path):
    path = W.export_dashboard(make_data(), tmp_path / "x.html", title="Cats & <dogs>")
    document = path.read_text(encoding="utf-8")
    assert "<script>" not in document and "<b>" not in document and "<dogs>" not in document
    assert "&lt;script&gt;" in document  # the token, from the examples
    assert "&lt;b&gt;" in document  # the promoted token, from the logit table
    assert "Cats &amp; &lt;dogs&gt;" in document
    text = parse(document).text
    assert "<script>" in text and " &amp;" in text  # shown to the reader as written
    assert " naïve" in text and " 東京" in text  # UTF-8 round trip


def test_card_shows_its_parts():
    data = make_data()
    card = W.feature_card_html(data, 3)
    text = parse(card).text
    assert "Feature 3" in text and "credential" in text and "0.91" in text
    assert "Decoder neighbours" in text and "cosine" in text
    assert "promoted" in text and "suppressed" in text
    assert "Top" in text and "bin 5/5" in text
    assert "5.00" in text  # the strongest activation heads the top examples
    assert parse(card).errors == []
    # without an SAE, logit effects or scores, those panels are left out
    bare = W.feature_card_html(make_data(with_sae=False, logit_effects={}, concept_scores={}), 3)
    for part in ("Decoder neighbours", "promoted", "credential"):
        assert part not in bare
    assert "no tokens where it fires" in W.feature_card_html(data, 11)


def test_neighbours_come_from_the_sae_and_link_only_to_cards_on_the_page():
    data = make_data()
    W_dec = data.sae.W_dec.detach()
    W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
    cos = W_dec @ W_dec[3]
    cos[3] = -2
    best = int(cos.argmax())
    card = W.feature_card_html(data, 3, links=True)
    assert f"feature {best}: cosine {float(cos[best]):.2f}" in parse(card).text
    hrefs = [a["href"] for tag, a in parse(card).attrs if tag == "a"]
    assert all(int(h.removeprefix("#feature-")) in FEATURES for h in hrefs)


def test_feature_data_checks_shapes():
    with pytest.raises(ValueError, match="one column per feature"):
        make_data(feature_ids=[3, 7])
    data = make_data(token_strings=lambda row: [VOCAB[int(t)].upper() for t in row])
    assert data.strings(2)[5] == "<SCRIPT>"


def test_concept_scores_are_f1_per_feature():
    acts = torch.zeros(1, 4, 2)
    acts[0, :2, 0] = 1.0  # feature A fires on tokens 0, 1
    acts[0, 3, 1] = 1.0  # feature B fires on token 3
    labels = np.zeros((1, 4, 2), dtype=bool)
    labels[0, :2, 0] = True  # concept x on tokens 0, 1
    labels[0, 2:, 1] = True  # concept y on tokens 2, 3
    scores = W.concept_scores(acts, labels, [10, 20], concepts=["x", "y"])
    assert scores[10] == {"x": 1.0, "y": 0.0}
    assert scores[20]["x"] == 0.0 and scores[20]["y"] == pytest.approx(2 / 3)


def test_feature_data_builds_from_the_reading_tools(monkeypatch):
    data = make_data()
    calls = {}

    def fake_latent_acts(model, sae, hook_name, tokens, features, batch_size=16):
        calls["latent"] = (hook_name, list(features))
        return data.acts

    vocab = types.SimpleNamespace(decode=lambda ids: VOCAB[ids[0]])
    ln_final = types.SimpleNamespace(w=torch.ones(16))
    model = types.SimpleNamespace(
        W_U=torch.randn(16, len(VOCAB)), ln_final=ln_final, tokenizer=vocab
    )
    monkeypatch.setattr(W.F, "latent_acts", fake_latent_acts)
    built = W.feature_data(model, data.sae, "blocks.0.hook_resid_post", data.tokens, FEATURES)
    assert calls["latent"] == ("blocks.0.hook_resid_post", FEATURES)
    assert set(built.logit_effects) == set(FEATURES)
    assert len(built.logit_effects[3]["promoted"]) == 10
    assert built.strings(2)[5] == "<script>" and built.concept_scores == {}
    assert "Feature 7" in W.dashboard_html(built)


def test_browse_outside_a_kernel_prints_text(capsys):
    assert W.in_kernel() is False
    data = make_data()
    assert W.browse(data) is None
    out = capsys.readouterr().out
    for f in FEATURES:
        assert f"feature {f}: fires on" in out
    assert "[[<script>]](5.00)" in out  # feature 3's top example
    top7 = W.F.top_examples(data.feature_acts(7), 1)[0]
    assert (
        W.F.render_text(
            data.strings(top7.row), data.feature_acts(7)[top7.row].tolist(), top7.position
        )
        in out
    )
    assert "credential 0.91" in out


class _FakeShell:
    kernel = object()  # what marks a Jupyter kernel's shell


@pytest.fixture
def fake_kernel(monkeypatch):
    import IPython

    monkeypatch.setitem(sys.modules, "IPython", IPython)
    monkeypatch.setattr(IPython, "get_ipython", lambda: _FakeShell())


def test_browse_in_a_kernel_returns_a_widget_with_a_static_fallback(fake_kernel):
    ipywidgets = pytest.importorskip("ipywidgets")
    assert W.in_kernel() is True
    data = make_data()
    browser = W.browse(data)
    assert isinstance(browser, W.FeatureBrowser)
    assert isinstance(browser.widget, ipywidgets.Widget)
    bundle = browser._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle  # widget front ends
    assert bundle["text/html"] == W.feature_card_html(data, 3)  # everyone else
    assert "Feature 3" in browser.card.value
    browser.picker.value = 7  # picking a feature redraws the card
    assert "Feature 7" in browser.card.value and "Feature 3" not in browser.card.value
    browser.show(11)
    assert browser.picker.value == 11 and "Feature 11" in browser.card.value


def test_browse_static_in_a_kernel_displays_html(fake_kernel, monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    assert W.browse(make_data(), static=True) is None
    assert len(shown) == 1 and all(f"Feature {f}" in shown[0].data for f in FEATURES)


def test_browse_without_ipywidgets_falls_back_to_text(fake_kernel, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import now raises ImportError
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    assert W.browse(make_data()) is None
    assert shown and "Feature 3" in shown[0].data
