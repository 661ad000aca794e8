"""scripts/train_tiny_sae.py trains the bundled SAEs with notebook 04's quick settings.

The settings are written twice on purpose: the notebook shows its learner every number
in one table, and the script must run without the notebook. These tests keep the two
copies, and the SAEs committed in data/tiny_sae, from drifting apart. Notebook 05 trains
smaller dictionaries with the same recipe, and a test keeps that copy in step too.
"""

import ast
import json
from types import SimpleNamespace

import nbformat
import pytest
from train_tiny_sae import HOOKS, OUT, SETTINGS, TRANSCODER_LAYERS, TRANSCODER_OUT

from labhelpers import env

NOTEBOOK = env.REPO_ROOT / "notebooks" / "04_sae_on_gpt2.ipynb"
NOTEBOOK_05 = env.REPO_ROOT / "notebooks" / "05_interpreting_features.ipynb"


def _literal(node: ast.expr):
    """A literal, or a ``dict(key=literal, ...)`` call of them; ValueError otherwise."""
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "dict" and not node.args:
        return {kw.arg: _literal(kw.value) for kw in node.keywords}
    return ast.literal_eval(node)


def quick_sizes(source: str) -> dict:
    """The ``"quick": dict(...)`` entry of the ``SIZES = {...}[PROFILE]`` table in ``source``.

    Entries that are not literals (a path built from ``env.DATA_DIR``) are left out.
    """
    for node in ast.walk(ast.parse(source)):
        is_sizes = isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "SIZES"
        if is_sizes and isinstance(node.value, ast.Subscript):
            table = node.value.value  # SIZES = {...}[PROFILE]: the dict being indexed
            for key, value in zip(table.keys, table.values):
                if ast.literal_eval(key) == "quick":
                    sizes = {}
                    for kw in value.keywords:
                        try:
                            sizes[kw.arg] = _literal(kw.value)
                        except ValueError:  # computed, e.g. a path from env.DATA_DIR
                            pass
                    return sizes
    raise LookupError("no SIZES table with a 'quick' entry")


def notebook_sizes(path=NOTEBOOK) -> dict:
    notebook = nbformat.read(path, as_version=4)
    cells = [c.source for c in notebook.cells if c.cell_type == "code" and "SIZES = {" in c.source]
    assert len(cells) == 1, f"{path.name} should set its sizes in one cell"
    return quick_sizes(cells[0])


def test_script_settings_are_notebook_04s_quick_profile():
    sizes = notebook_sizes()
    assert {key: sizes[key] for key in SETTINGS} == SETTINGS
    assert sizes["hook"] in HOOKS
    assert sizes["model"] == "tiny"


def test_the_transcoders_use_notebook_04s_quick_transcoder_settings():
    sizes = notebook_sizes()
    assert sizes["mlp_tokens"] == SETTINGS["train_tokens"]
    assert sizes["mlp_steps"] == SETTINGS["steps"]
    assert sizes["mlp_layer"] in TRANSCODER_LAYERS


def test_quick_sizes_reads_the_table_it_is_given():
    source = (
        'SIZES = {"quick": dict(k=3, hook="a", path=str(DIR / "x"), train=dict(steps=2)),'
        ' "full": dict(k=9)}[PROFILE]'
    )
    assert quick_sizes(source) == {"k": 3, "hook": "a", "train": {"steps": 2}}
    with pytest.raises(LookupError):
        quick_sizes("SIZES = 1")


def test_notebook_05_trains_its_smaller_dictionaries_with_the_shipped_recipe():
    recipe = notebook_sizes(NOTEBOOK_05)["dictionary_train"]
    shipped = {key: SETTINGS[key] for key in ("steps", "batch", "lr", "dead_window")}
    assert recipe == {"tokens": SETTINGS["train_tokens"], **shipped}


@pytest.mark.parametrize("hook", HOOKS)
def test_bundled_sae_was_trained_with_these_settings(hook):
    metrics = json.loads((OUT / hook / "metrics.json").read_text())
    assert metrics["settings"] == SETTINGS
    config = json.loads((OUT / hook / "cfg.json").read_text())
    assert config["metadata"]["hook_name"] == hook
    assert config["d_sae"] == SETTINGS["d_sae"]
    assert config["metadata"]["labhelpers"]["config"]["k"] == SETTINGS["k"]


@pytest.mark.parametrize("layer", TRANSCODER_LAYERS)
def test_bundled_transcoder_was_trained_with_these_settings(layer):
    folder = TRANSCODER_OUT / f"blocks.{layer}.hook_mlp_out"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["settings"] == SETTINGS
    config = json.loads((folder / "cfg.json").read_text())
    assert config["architecture"] == "topk_transcoder"
    hooks = (config["metadata"]["hook_name"], config["metadata"]["hook_name_out"])
    assert hooks == (f"blocks.{layer}.mlp.hook_in", f"blocks.{layer}.hook_mlp_out")
    assert config["d_sae"] == SETTINGS["d_sae"] and config["k"] == SETTINGS["k"]


def test_train_seconds_counts_the_training_and_not_the_evaluation(monkeypatch, tmp_path):
    # A fake clock: training takes 7 "seconds", the evaluation after it 100.
    import train_tiny_sae as script

    from labhelpers import models

    clock = [0.0]
    monkeypatch.setattr(script, "time", SimpleNamespace(perf_counter=lambda: clock[0]))

    def advancing(fn, seconds):
        def wrapped(*args, **kwargs):
            clock[0] += seconds
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(script.Trainer, "run", advancing(script.Trainer.run, 7.0))
    monkeypatch.setattr(script.metrics, "evaluate", advancing(script.metrics.evaluate, 100.0))
    tiny = dict(SETTINGS, train_tokens=4096, d_sae=64, k=4, batch=256, steps=4, context=32)
    monkeypatch.setattr(script, "SETTINGS", dict(tiny, eval_tokens=512, eval_rows=2))
    result = script.train_one(models.load_model("tiny"), HOOKS[0], tmp_path)
    assert result["train_seconds"] == 7.0
    assert json.loads((tmp_path / HOOKS[0] / "metrics.json").read_text())["train_seconds"] == 7.0
