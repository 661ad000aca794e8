"""Tests for labhelpers.io: round trips, SAELens's own loader, clear errors."""

import json
import warnings

import pytest
import sae_lens
import torch
from safetensors.torch import load_file, save_file

from labhelpers import activations, circuits, features, metrics, splice, steering, widgets
from labhelpers.env import DATA_DIR
from labhelpers.io import CentredInput, SAEFormatError, load_pretrained_sae, load_sae, save_sae
from labhelpers.sae import ARCHITECTURES, SAEConfig, SAEOutput, make_sae

pytestmark = pytest.mark.usefixtures("one_thread")


D_IN, D_SAE = 10, 24


def _trained_looking(name: str):
    """An SAE with non-trivial biases and thresholds, so that equality means something."""
    sae = make_sae(name, SAEConfig(d_in=D_IN, d_sae=D_SAE, k=3, seed=2))
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for param in sae.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=gen))
        if name == "batchtopk":
            sae.threshold.fill_(0.3)
    sae.normalize_decoder_()
    return sae.eval()


def _x(n: int = 64) -> torch.Tensor:
    return torch.randn(n, D_IN, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_round_trip(name, tmp_path):
    sae = _trained_looking(name)
    save_sae(sae, tmp_path / name, hook_name="blocks.1.hook_resid_post", model_name="tiny")
    loaded = load_sae(tmp_path / name)
    assert type(loaded) is type(sae) and loaded.cfg == sae.cfg
    for key, value in sae.state_dict().items():
        if key == "threshold_updates":  # a loaded threshold counts as settled (tested below)
            continue
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=1e-6, atol=1e-7)
    x = _x()
    torch.testing.assert_close(loaded.encode(x), sae.encode(x))
    torch.testing.assert_close(loaded.decode(sae.encode(x)), sae.decode(sae.encode(x)))


def test_a_matryoshka_sae_keeps_its_prefixes_through_json(tmp_path):
    sae = make_sae("matryoshka", SAEConfig(d_in=D_IN, d_sae=D_SAE, k=3, prefixes=[4, 12]))
    save_sae(sae, tmp_path)
    loaded = load_sae(tmp_path)
    assert loaded.cfg.prefixes == (4, 12) and loaded.sizes == (4, 12, D_SAE)
    assert loaded.cfg == sae.cfg


def test_layout_keys_and_tensor_names(tmp_path):
    save_sae(_trained_looking("jumprelu"), tmp_path, hook_name="blocks.0.hook_resid_post")
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    for key in ("architecture", "d_in", "d_sae", "dtype", "device", "apply_b_dec_to_input"):
        assert key in cfg
    assert cfg["architecture"] == "jumprelu" and cfg["normalize_activations"] == "none"
    assert cfg["metadata"]["hook_name"] == "blocks.0.hook_resid_post"
    tensors = load_file(str(tmp_path / "sae_weights.safetensors"))
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {
        "W_enc": (D_IN, D_SAE),
        "b_enc": (D_SAE,),
        "W_dec": (D_SAE, D_IN),
        "b_dec": (D_IN,),
        "threshold": (D_SAE,),
    }


def test_wrong_shape_names_the_tensor(tmp_path):
    save_sae(_trained_looking("topk"), tmp_path)
    tensors = load_file(str(tmp_path / "sae_weights.safetensors"))
    tensors["W_dec"] = tensors["W_dec"].T.contiguous()
    save_file(tensors, str(tmp_path / "sae_weights.safetensors"))
    with pytest.raises(SAEFormatError, match=r"'W_dec' has shape \(10, 24\), expected \(24, 10\)"):
        load_sae(tmp_path)


def test_missing_tensor_names_it(tmp_path):
    save_sae(_trained_looking("jumprelu"), tmp_path)
    tensors = load_file(str(tmp_path / "sae_weights.safetensors"))
    del tensors["threshold"]
    save_file(tensors, str(tmp_path / "sae_weights.safetensors"))
    with pytest.raises(SAEFormatError, match="missing tensor 'threshold'"):
        load_sae(tmp_path)


@pytest.mark.parametrize("key", ["d_sae", "architecture"])
def test_missing_config_field_names_it(key, tmp_path):
    save_sae(_trained_looking("relu"), tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    del cfg[key]
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(SAEFormatError, match=f"missing required field '{key}'"):
        load_sae(tmp_path)


def _edit_our_metadata(path, **changes) -> None:
    """Rewrite ``metadata["labhelpers"]`` in a saved ``cfg.json``."""
    cfg = json.loads((path / "cfg.json").read_text())
    cfg["metadata"]["labhelpers"].update(changes)
    (path / "cfg.json").write_text(json.dumps(cfg))


def test_an_unknown_architecture_is_named(tmp_path):
    save_sae(_trained_looking("topk"), tmp_path)
    _edit_our_metadata(tmp_path, architecture="crosscoder")
    with pytest.raises(SAEFormatError, match=r"labhelpers\.architecture' is 'crosscoder'"):
        load_sae(tmp_path)


def test_a_missing_labhelpers_config_is_named(tmp_path):
    save_sae(_trained_looking("topk"), tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    del cfg["metadata"]["labhelpers"]["config"]
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(SAEFormatError, match=r"field 'metadata\.labhelpers\.config'"):
        load_sae(tmp_path)


def test_unknown_config_fields_from_a_newer_version_are_dropped_with_a_warning(tmp_path):
    sae = _trained_looking("topk")
    save_sae(sae, tmp_path)
    config = {**sae.cfg.to_dict(), "matryoshka_sizes": [4, 8], "new_coeff": 0.5}
    _edit_our_metadata(tmp_path, config=config)
    with pytest.warns(UserWarning, match=r"\['matryoshka_sizes', 'new_coeff'\]"):
        loaded = load_sae(tmp_path)
    assert loaded.cfg == sae.cfg
    torch.testing.assert_close(loaded.encode(_x()), sae.encode(_x()))


def _edit_cfg(path, as_saelens_wrote_it: bool = False, **changes) -> None:
    """Rewrite fields of a saved ``cfg.json`` (a value of None deletes the field).

    ``as_saelens_wrote_it`` drops ``metadata["labhelpers"]``, so that the loader reads the
    SAELens fields (architecture, k, ...) as it does for an SAE SAELens wrote.
    """
    cfg = json.loads((path / "cfg.json").read_text())
    if as_saelens_wrote_it:
        del cfg["metadata"]["labhelpers"]
    for key, value in changes.items():
        if value is None:
            del cfg[key]
        else:
            cfg[key] = value
    (path / "cfg.json").write_text(json.dumps(cfg))


def _two_thresholds(path) -> None:
    tensors = load_file(str(path / "sae_weights.safetensors"))
    tensors["threshold"][5] += 0.1
    save_file(tensors, str(path / "sae_weights.safetensors"))


@pytest.mark.parametrize(
    ("name", "edit", "message"),
    [
        (
            "relu",
            lambda p: _edit_cfg(p, normalize_activations="expected_average_only_in"),
            r"cfg\.json: field 'normalize_activations' is 'expected_average_only_in'; only 'none'",
        ),
        ("batchtopk", _two_thresholds, r"'threshold' of a batchtopk SAE must be one value"),
        (
            "topk",
            lambda p: _edit_cfg(p, as_saelens_wrote_it=True, rescale_acts_by_decoder_norm=True),
            r"field 'rescale_acts_by_decoder_norm' must be false",
        ),
        (
            "relu",
            lambda p: _edit_cfg(p, as_saelens_wrote_it=True, architecture="matryoshka_batchtopk"),
            r"field 'architecture' is 'matryoshka_batchtopk'; supported: \['gated', 'jumprelu'",
        ),
        (
            "topk",
            lambda p: _edit_cfg(p, as_saelens_wrote_it=True, k=None),
            r"missing required field 'k' for a topk SAE",
        ),
        ("relu", lambda p: (p / "cfg.json").unlink(), r"no cfg\.json in"),
        (
            "relu",
            lambda p: (p / "sae_weights.safetensors").unlink(),
            r"no sae_weights\.safetensors in",
        ),
    ],
    ids=[
        "normalize_activations",
        "batchtopk_threshold",
        "rescale_acts_by_decoder_norm",
        "saelens_architecture",
        "topk_without_k",
        "no_cfg",
        "no_weights",
    ],
)
def test_a_file_we_cannot_read_faithfully_is_refused_with_its_reason(name, edit, message, tmp_path):
    save_sae(_trained_looking(name), tmp_path)
    load_sae(tmp_path)  # as saved, it loads: the edit alone is refused
    edit(tmp_path)
    with pytest.raises(SAEFormatError, match=message):
        load_sae(tmp_path)


@pytest.mark.parametrize("as_saelens_wrote_it", [False, True], ids=["ours", "saelens"])
def test_round_trip_without_b_dec_applied_to_the_input(as_saelens_wrote_it, tmp_path):
    sae = make_sae("relu", SAEConfig(d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=False, seed=2))
    with torch.no_grad():
        sae.b_enc.fill_(0.05)
        sae.b_dec.copy_(torch.linspace(-1.0, 1.0, D_IN))  # subtracting it would change z
    save_sae(sae.eval(), tmp_path)
    if as_saelens_wrote_it:  # then only the top-level field says so
        _edit_cfg(tmp_path, as_saelens_wrote_it=True)
    loaded = load_sae(tmp_path)
    assert loaded.cfg.apply_b_dec_to_input is False
    x = _x()
    torch.testing.assert_close(loaded.encode(x), sae.encode(x))
    assert not torch.allclose(sae.encode(x), sae.encode(x - sae.b_dec))


def test_a_loaded_batchtopk_threshold_is_a_settled_average(tmp_path):
    """Training on from a loaded threshold nudges it by the EMA's momentum, never replaces it."""
    save_sae(_trained_looking("batchtopk"), tmp_path)  # threshold 0.3
    sae = load_sae(tmp_path)
    m = sae.cfg.threshold_momentum
    assert 1 - (1 - m) ** int(sae.threshold_updates) == 1.0  # the bias correction is gone
    before = float(sae.threshold)
    sae.train()
    with torch.no_grad():
        z = sae(_x()).z
    batch_value = float(z[z > 0].min())  # what this batch alone says: its smallest kept act
    assert abs(batch_value - before) > 0.1  # so that replacing the threshold would show
    assert float(sae.threshold) == pytest.approx(before + m * (batch_value - before), rel=1e-5)


# --- SAELens itself loads our files and computes the same thing --------------------------


@pytest.mark.parametrize("name", ["relu", "topk", "matryoshka", "jumprelu", "batchtopk", "gated"])
def test_saelens_loads_ours_and_agrees(name, tmp_path):
    ours = _trained_looking(name)
    save_sae(ours, tmp_path)
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path))
    expected_class = {
        "relu": "StandardSAE",
        "topk": "TopKSAE",
        "matryoshka": "TopKSAE",  # its nested losses only shaped training
        "jumprelu": "JumpReLUSAE",
        "batchtopk": "JumpReLUSAE",
        "gated": "GatedSAE",
    }[name]
    assert type(theirs).__name__ == expected_class
    x = _x(128)
    with torch.no_grad():
        z_ours, z_theirs = ours.encode(x), theirs.encode(x)
        assert (z_ours != 0).sum() > 0
        torch.testing.assert_close(z_theirs, z_ours, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(theirs.decode(z_ours), ours.decode(z_ours), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(theirs(x), ours.decode(ours.encode(x)), rtol=1e-5, atol=1e-6)


def test_we_load_a_file_saelens_wrote(tmp_path):
    theirs = sae_lens.TopKSAE(sae_lens.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=3))
    with torch.no_grad():
        theirs.b_enc.fill_(0.05)
        theirs.b_dec.fill_(-0.1)
    theirs.save_model(str(tmp_path))
    ours = load_sae(tmp_path)
    x = _x()
    torch.testing.assert_close(ours.encode(x), theirs.encode(x).detach())


@pytest.mark.parametrize("layer", [1, 2, 3])
def test_bundled_tiny_saes_load_and_fit_the_bundled_model(tiny_model, layer):
    """data/tiny_sae/ (scripts/train_tiny_sae.py): SAELens layout, k = 32 on the model's own activations."""
    from labhelpers import activations

    hook = f"blocks.{layer}.hook_resid_pre"
    path = DATA_DIR / "tiny_sae" / hook
    sae = load_sae(path)
    cfg = json.loads((path / "cfg.json").read_text())
    assert cfg["metadata"]["hook_name"] == hook and sae.cfg.d_in == tiny_model.cfg.d_model
    rows = activations.token_rows(
        activations.corpus_texts("val", 20, seed=5), tiny_model.tokenizer, 64, 4
    )
    (acts,) = activations.harvest(tiny_model, hook, [rows])
    with torch.no_grad():
        z = sae.encode(acts)
        fvu = metrics.fvu(acts, sae.decode(z))
    assert metrics.l0(z) == 32 and fvu < 0.25, fvu
    assert sae_lens.SAE.load_from_disk(str(path)).cfg.d_sae == sae.cfg.d_sae


def test_a_damaged_weights_file_is_named(tmp_path):
    save_sae(_trained_looking("topk"), tmp_path)
    weights = tmp_path / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])  # a download or copy cut short
    with pytest.raises(SAEFormatError, match=r"sae_weights\.safetensors is damaged"):
        load_sae(tmp_path)


def test_a_config_that_is_not_json_is_named(tmp_path):
    save_sae(_trained_looking("topk"), tmp_path)
    (tmp_path / "cfg.json").write_text('{"architecture": "topk",')
    with pytest.raises(SAEFormatError, match=r"cfg\.json is not valid JSON"):
        load_sae(tmp_path)


def test_nan_weights_are_refused(tmp_path):
    save_sae(_trained_looking("topk"), tmp_path)
    tensors = load_file(str(tmp_path / "sae_weights.safetensors"))
    tensors["b_dec"][3] = float("nan")
    save_file(tensors, str(tmp_path / "sae_weights.safetensors"))
    with pytest.raises(SAEFormatError, match="'b_dec' holds NaN"):
        load_sae(tmp_path)


def test_a_missing_folder_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="No saved SAE at"):
        load_sae(tmp_path / "no-such-sae")


def _public_sae(centred: bool) -> sae_lens.StandardSAE:
    """A SAELens SAE whose metadata says how its model was loaded, as a public one's does."""
    from sae_lens.saes.sae import SAEMetadata

    kwargs = {"center_writing_weights": True} if centred else None
    cfg = sae_lens.StandardSAEConfig(
        d_in=D_IN, d_sae=D_SAE, metadata=SAEMetadata(model_from_pretrained_kwargs=kwargs)
    )
    with warnings.catch_warnings():  # SAELens's advice to load the model its way
        warnings.simplefilter("ignore")
        sae = sae_lens.StandardSAE(cfg)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in sae.parameters():
            param.copy_(torch.randn(param.shape, generator=gen))
    return sae.eval()


def test_a_public_sae_trained_on_a_centred_stream_centres_its_input(monkeypatch):
    public = _public_sae(centred=True)
    monkeypatch.setattr(sae_lens.SAE, "from_pretrained", lambda *a, **k: public)
    sae = load_pretrained_sae("gpt2-small-res-jb", "blocks.8.hook_resid_pre")
    assert isinstance(sae, CentredInput) and sae.W_dec is public.W_dec
    assert sae.cfg.d_sae == D_SAE and sae.architecture == "standard"
    x, shift = _x(), 3.0 * torch.ones(D_IN)
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x), public.encode(x - x.mean(-1, keepdim=True)))
        # layer norm ignores a vector's mean, and so does the wrapped SAE; the bare one does not
        torch.testing.assert_close(sae.encode(x + shift), sae.encode(x))
        assert not torch.allclose(public.encode(x + shift), public.encode(x))
        torch.testing.assert_close(sae(x), public.decode(sae.encode(x)))
        centred = x - x.mean(-1, keepdim=True)
        fvu = metrics.fvu(centred, public(centred))
    assert metrics.evaluate(sae, x)["fvu"] == pytest.approx(fvu)


def test_a_public_sae_trained_on_the_raw_stream_is_returned_as_it_is(monkeypatch):
    public = _public_sae(centred=False)
    monkeypatch.setattr(sae_lens.SAE, "from_pretrained", lambda *a, **k: public)
    assert load_pretrained_sae("some-release", "blocks.0.hook_resid_pre") is public


def test_a_public_sae_that_cannot_be_fetched_points_to_the_quick_profile(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(sae_lens.SAE, "from_pretrained", offline)
    with pytest.raises(RuntimeError, match="LAB_PROFILE=quick") as error:
        load_pretrained_sae("gpt2-small-res-jb", "blocks.8.hook_resid_pre")
    assert "gpt2-small-res-jb" in str(error.value) and "no network" in str(error.value)


def test_a_centred_sae_spliced_with_its_error_leaves_the_model_unchanged(tiny_model):
    """The mean it drops goes to the error term, so splicing it in changes nothing."""
    from labhelpers import splice

    hook = "blocks.1.hook_resid_pre"
    sae = CentredInput(load_sae(DATA_DIR / "tiny_sae" / hook))
    tokens = torch.tensor([[tiny_model.tokenizer.bos_token_id, *range(5, 17)]])
    clean = splice.logits_with(tiny_model, tokens, hook, None)
    kept = splice.logits_with(tiny_model, tokens, hook, splice.sae_hook(sae, keep_error=True))
    torch.testing.assert_close(kept, clean, atol=1e-4, rtol=1e-4)
    bare = splice.logits_with(tiny_model, tokens, hook, splice.sae_hook(sae))
    assert not torch.allclose(bare, clean, atol=1e-3)


# --- CentredInput stands in for the SAE everywhere the library uses one -------------------


def _off_centre(n: int = 64) -> torch.Tensor:
    """Inputs whose vectors have large, varying means over d_in, as GPT-2's stream has."""
    gen = torch.Generator().manual_seed(1)
    return _x(n) + 3.0 * torch.randn(n, 1, generator=gen)


def _centred(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(-1, keepdim=True)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_centred_input_is_the_sae_on_centred_inputs(name):
    sae = _trained_looking(name)
    wrapped, x = CentredInput(sae), _off_centre()
    assert wrapped.cfg is sae.cfg and wrapped.architecture == sae.architecture
    for key in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert getattr(wrapped, key) is getattr(sae, key)
    assert list(wrapped.parameters()) == list(sae.parameters())
    with torch.no_grad():
        torch.testing.assert_close(wrapped.pre_acts(x), sae.pre_acts(_centred(x)))
        torch.testing.assert_close(wrapped.encode(x), sae.encode(_centred(x)))
        out = wrapped(x)
        assert isinstance(out, SAEOutput)
        torch.testing.assert_close(out, sae(_centred(x)))
    inputs, targets = wrapped.split_batch(x)
    assert inputs is x
    torch.testing.assert_close(targets, _centred(x))
    results = metrics.evaluate(wrapped, x, true_directions=sae.W_dec[:5])
    assert results == pytest.approx(metrics.evaluate(sae, _centred(x), sae.W_dec[:5]))
    assert results != pytest.approx(metrics.evaluate(sae, x, sae.W_dec[:5]))  # centring matters
    baseline = _off_centre(32) + 1.0
    torch.testing.assert_close(
        steering.contrast_features(wrapped, x, baseline),
        steering.contrast_features(sae, _centred(x), _centred(baseline)),
    )
    assert features.decoder_neighbours(wrapped, 0) == features.decoder_neighbours(sae, 0)
    # splice's hook replaces positions 1 onwards with the reconstruction, latents edited
    acts = x.reshape(4, 16, D_IN)
    edit = circuits.ablate_features(wrapped, [0, 1, 2])
    spliced = splice.sae_hook(wrapped, edit)(acts)[:, 1:]
    torch.testing.assert_close(spliced, splice.sae_hook(sae, edit)(_centred(acts))[:, 1:])


def test_centred_input_in_the_model_facing_entry_points(tiny_model, random_tokens):
    """features, widgets and circuits harvest the stream themselves: the expected latents
    here are the bare SAE's on the same activations, centred by hand."""
    hook = "blocks.1.hook_resid_pre"
    sae = load_sae(DATA_DIR / "tiny_sae" / hook)
    wrapped, tokens, chosen = CentredInput(sae), random_tokens(3, 12, seed=4), [0, 5, 7]
    (acts,) = activations.harvest(tiny_model, hook, [tokens], exclude_bos=False)
    with torch.no_grad():
        expected = sae.encode(_centred(acts)).reshape(*tokens.shape, -1)
        assert not torch.allclose(expected, sae.encode(acts).reshape(expected.shape), atol=1e-3)
    expected[:, 0] = 0.0  # BOS, as latent_acts sets it

    got = features.latent_acts(tiny_model, wrapped, hook, tokens)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert features.top_examples(got[..., 5], k=3) == features.top_examples(expected[..., 5], k=3)
    assert features.logit_effects(tiny_model, wrapped, 5) == features.logit_effects(
        tiny_model, sae, 5
    )
    data = widgets.feature_data(tiny_model, wrapped, hook, tokens, chosen)
    torch.testing.assert_close(data.acts, expected[..., chosen], atol=1e-5, rtol=1e-5)
    assert "<" in widgets.feature_card_html(data, 5)  # decoder neighbours read W_dec
    means = circuits.feature_means(tiny_model, wrapped, hook, tokens)
    torch.testing.assert_close(means, expected[:, 1:].mean((0, 1)), atol=1e-5, rtol=1e-5)
