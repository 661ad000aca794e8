import copy
import json
import uuid

import nbformat
import pytest
import run_notebooks


def notebook_with_widgets(seed: int):
    """A notebook that shows a box holding a slider, with two stray progress bars: fresh random
    ids, and the state dict in a shuffled order, as two runs of the same code would give."""
    ids = {
        name: uuid.UUID(int=seed * 10 + i).hex
        for i, name in enumerate("box slider layout bar done".split())
    }
    ref = {name: f"IPY_MODEL_{ids[name]}" for name in ids}
    models = {
        ids["box"]: {
            "model_name": "VBoxModel",
            "state": {"children": [ref["slider"]], "layout": ref["layout"]},
        },
        ids["slider"]: {
            "model_name": "IntSliderModel",
            "state": {"value": 3, "layout": ref["layout"]},
        },
        ids["layout"]: {"model_name": "LayoutModel", "state": {"width": "auto"}},
        ids["bar"]: {"model_name": "FloatProgressModel", "state": {"value": 1.0}},
        ids["done"]: {"model_name": "FloatProgressModel", "state": {"value": 0.5}},
    }
    order = list(models) if seed % 2 else list(reversed(models))
    nb = nbformat.v4.new_notebook()
    view = {"model_id": ids["box"], "version_major": 2, "version_minor": 0}
    nb.cells = [
        nbformat.v4.new_code_cell(
            "show()",
            outputs=[nbformat.v4.new_output("display_data", {run_notebooks.WIDGET_VIEW: view})],
        )
    ]
    nb.cells[0].id = "cell-0"  # a saved notebook keeps its cell ids
    nb.metadata["widgets"] = {run_notebooks.WIDGET_STATE: {"state": {m: models[m] for m in order}}}
    return nb, ids


def test_two_runs_of_the_same_widgets_are_saved_identically():
    saved = []
    for seed in (1, 2):
        nb, _ = notebook_with_widgets(seed)
        run_notebooks.stable_widget_ids(nb)
        saved.append(nbformat.writes(nb))
    assert saved[0] == saved[1]


def test_renumbering_keeps_every_reference_pointing_at_the_same_model():
    nb, ids = notebook_with_widgets(1)
    before = copy.deepcopy(nb)
    run_notebooks.stable_widget_ids(nb)
    state = nb.metadata["widgets"][run_notebooks.WIDGET_STATE]["state"]
    view = nb.cells[0].outputs[0].data[run_notebooks.WIDGET_VIEW]["model_id"]
    assert view == f"{0:032x}" and state[view]["model_name"] == "VBoxModel"  # shown first
    slider = state[view]["state"]["children"][0].removeprefix("IPY_MODEL_")
    assert state[slider]["model_name"] == "IntSliderModel"
    layout = state[slider]["state"]["layout"].removeprefix("IPY_MODEL_")
    assert state[layout]["model_name"] == "LayoutModel"
    assert state[view]["state"]["layout"] == state[slider]["state"]["layout"]
    assert sorted(m["model_name"] for m in state.values()) == sorted(
        m["model_name"]
        for m in before.metadata["widgets"][run_notebooks.WIDGET_STATE]["state"].values()
    )
    assert not any(old in json.dumps(nb) for old in ids.values())


def test_a_notebook_without_widgets_is_left_alone():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
    text = nbformat.writes(nb)
    run_notebooks.stable_widget_ids(nb)
    assert nbformat.writes(nb) == text


def test_a_missing_notebook_is_named_before_any_notebook_runs(tmp_path, capsys, monkeypatch):
    ran = []
    monkeypatch.setattr(run_notebooks, "execute", lambda path, timeout: ran.append(path) or 0.0)
    real = tmp_path / "00_real.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), real)
    missing = tmp_path / "01_typo.ipynb"
    with pytest.raises(SystemExit):
        run_notebooks.main([str(real), str(missing)])
    assert f"{missing}: no such notebook" in capsys.readouterr().err
    assert ran == []  # the typo is caught before the first notebook's long run
