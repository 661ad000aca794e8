"""Tests of scripts/sweep_tiny_model.py: its refusal rule, one small run, its summary table."""

from __future__ import annotations

import importlib
import json
import sys

import numpy as np
import pytest
import torch

from labhelpers import circuits, corpus, env, models

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sweep():
    sys.path.insert(0, str(env.REPO_ROOT / "scripts"))  # it imports train_tiny_model
    # Imported by name, as the sweep's worker processes import it to run ``run_one``.
    return importlib.import_module("sweep_tiny_model")


def test_the_bare_model_refuses_like_the_bridge(sweep, tiny_model):
    from transformers import GPT2LMHeadModel

    bare = GPT2LMHeadModel.from_pretrained(models.TINY_MODEL_DIR).eval()
    bridge = sweep._BareBridge(bare, tiny_model.tokenizer, "cpu")
    prompts = [p.prompt for p in corpus.chat_prompts("heldout", 15, seed=3)]
    assert torch.equal(bridge.to_tokens(prompts[0]), tiny_model.to_tokens(prompts[0]).cpu())
    ours = circuits.forced_refusals(bridge, prompts, corpus.REFUSAL)
    theirs = circuits.forced_refusals(tiny_model, prompts, corpus.REFUSAL)
    assert ours.tolist() == theirs.tolist()
    assert 0 < ours.sum() < len(prompts)  # both outcomes occur, so the comparison means something
    margins = sweep.refusal_margins(bridge, prompts, corpus.REFUSAL, batch=16)
    assert np.allclose(
        margins, sweep.refusal_margins(tiny_model, prompts, corpus.REFUSAL), atol=1e-3
    )
    assert (margins[ours.numpy()] > 0).all()  # a refusal starts with the refusal's first token
    with pytest.raises(ValueError, match="no hook points"):
        bridge.run_with_hooks(bridge.to_tokens(prompts[0]), fwd_hooks=[("hook", None)])


def test_one_small_run_trains_saves_and_scores(sweep, tmp_path):
    flags = (
        "--augment --decision-weight 5 --d-model 32 --n-layer 1 --n-head 2 --batch-size 4 --steps 4"
    )
    flags += " --warmup 1 --vocab-size 400 --n-train-docs 300 --n-eval-docs 4 --n-eval-prompts 3"
    result = sweep.run_one("tiny", flags, 1, "cpu", tmp_path / "tiny-s1")
    assert (result["run"], result["seed"], result["flags"]) == ("tiny", 1, flags)
    assert result["cred_answered"] == corpus.CRED_ANSWERED  # which corpus it trained on
    for split in ("val", "heldout"):
        for kind in corpus.CHAT_KINDS:
            assert result[f"{split}_{kind}"] in (0.0, 1 / 3, 2 / 3, 1.0)
        assert result[f"{split}_loss"] > 0 and result[f"{split}_unigram"] > 0
        assert 0 <= result[f"{split}_auc_harmful"] <= 1
    assert np.isfinite(result["heldout_loss_known_words"])
    saved = json.loads((tmp_path / "tiny-s1" / "config.json").read_text())
    assert (saved["n_embd"], saved["n_layer"]) == (32, 1)
    assert (tmp_path / "tiny-s1" / "model.safetensors").exists()
    with pytest.raises(SystemExit):  # a flag train_tiny_model does not know
        sweep.run_one("bad", "--no-such-flag", 0, "cpu", tmp_path / "bad")


def _result(run: str, seed: int, h: float, lc: float, lp: float) -> dict:
    auc = {"heldout_auc_harmful": 0.9 + seed / 20, "heldout_auc_legit_credential": 0.8}
    return {
        **(auc if run == "a" else {}),  # run b: a sweep from before the AUC was measured
        **({"cred_answered": 0.2} if run == "a" else {}),  # run b: from before CRED_ANSWERED
        "run": run,
        "flags": "--dropout 0.1" if run == "b" else "",
        "seed": seed,
        "heldout_harmful": h,
        "heldout_legit_credential": lc,
        "heldout_legit_plain": lp,
        "heldout_loss": 7.0 + seed,
        "heldout_unigram": 7.5,
    }


def test_margin_and_summary_on_a_hand_built_sweep(sweep):
    results = [
        _result("a", 0, 0.95, 0.80, 0.05),  # meets all three targets, by 0.05
        _result("a", 1, 0.85, 0.80, 0.05),  # harmful 5 points short
        _result("b", 0, 0.90, 0.70, 0.30),
    ]
    assert sweep.margin(results[0]) == pytest.approx(0.05)
    assert sweep.margin(results[1]) == pytest.approx(-0.05)
    table = sweep.summary(results)
    rows = [line for line in table.splitlines() if line.startswith("| a") or line.startswith("| b")]
    assert rows[0] == (
        "| a | `(defaults)` | 0.2 | 2 | 90% ± 7% (85%-95%) | 80% ± 0% (80%-80%) | 5% ± 0% (5%-5%) "
        "| 0.925 ± 0.035 (0.900-0.950) | 0.800 ± 0.000 (0.800-0.800) | 7.50 ± 0.71 (7.00-8.00) | 7.50 ± 0.00 (7.50-7.50) | 1 |"
    )
    assert rows[1] == (
        "| b | `--dropout 0.1` | 0 | 1 | 90% (90%-90%) | 70% (70%-70%) | 30% (30%-30%) | - | - "
        "| 7.00 (7.00-7.00) | 7.50 (7.50-7.50) | 0 |"
    )


def test_committed_sweep_summary_is_written_from_its_results(sweep):
    folder = models.TINY_MODEL_DIR / "sweep"
    results = json.loads((folder / "results.json").read_text())
    assert (folder / "SUMMARY.md").read_text() == sweep.summary(results)
    met = [(r["run"], r["seed"]) for r in results if sweep.margin(r) >= 0]
    # only runs with the decision weight meet all three: the bundled recipe on both corpora
    # (noise: before CRED_ANSWERED, answered: after) and the recipe before it
    assert met == [("decision", 0), ("decision", 2), ("noise", 0), ("answered", 0), ("answered", 1)]
    # the bundled model is its recipe's seed 0 on today's corpus, scored as the card scores it
    card = json.loads((models.TINY_MODEL_DIR / "metrics.json").read_text())["eval"]
    bundled = next(r for r in results if r["run"] == "answered" and r["seed"] == 0)
    assert bundled["cred_answered"] == corpus.CRED_ANSWERED
    assert bundled["flags"] == next(r["flags"] for r in results if r["run"] == "noise")
    assert bundled["heldout_loss"] == pytest.approx(card["loss"]["heldout"], abs=1e-4)
    assert all(
        bundled[f"heldout_{kind}"] == card["refusal_rate"]["heldout"][kind]
        for kind in corpus.CHAT_KINDS
    )


SMALL = "--d-model 32 --n-layer 1 --n-head 2 --batch-size 4 --warmup 1 --vocab-size 400"
SMALL += " --n-train-docs 300 --n-eval-docs 4 --n-eval-prompts 3"


def test_a_checkpoint_from_other_flags_is_refused_not_resumed(sweep, tmp_path):
    """A sweep run again into the same --out resumes each run from its checkpoint. When a
    run's flags changed in between, that resumed the old run's model and scored it under
    the new flags; now the checkpoint is refused, naming what differs."""
    out = tmp_path / "base-s0"
    sweep.run_one("base", SMALL + " --steps 2 --checkpoint-every 2", 0, "cpu", out)
    assert (out / "checkpoint" / "checkpoint.safetensors").exists()
    with pytest.raises(ValueError, match=r"lr 0\.002 there, 0\.001 here"):
        sweep.run_one("base", SMALL + " --steps 2 --checkpoint-every 2 --lr 1e-3", 0, "cpu", out)
    # how often it saves and where it runs are not settings: the same run resumes
    result = sweep.run_one("base", SMALL + " --steps 2 --checkpoint-every 1", 0, "cpu", out)
    assert result["seed"] == 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("base", "write NAME:FLAGS"),
        (":--dropout 0.1", "write NAME:FLAGS"),
        ("x:--no-such-flag", "flags that train_tiny_model.py does not accept"),
    ],
)
def test_a_bad_run_spec_is_a_usage_error_before_anything_trains(
    sweep, tmp_path, capsys, spec, message
):
    with pytest.raises(SystemExit):
        sweep.main(["--run", spec, "--out", str(tmp_path)])
    assert f"--run {spec!r}: {message}" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # two runs would share a folder
        small = f"{SMALL} --steps 1"  # were the check to fail, these runs stay short
        sweep.main(
            ["--run", f"a:{small}", "--run", f"a:{small} --dropout 0.1", "--out", str(tmp_path)]
        )
    assert "the name 'a' is already taken" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_failed_run_costs_the_sweep_only_itself(sweep, tmp_path, capsys):
    """The first run fails (3 heads do not divide a width of 32): the run after it is still
    trained, scored and saved, and the exit status says that one failed."""
    argv = ["--run", f"bad:{SMALL} --steps 2 --n-head 3", "--run", f"ok:{SMALL} --steps 2"]
    argv += ["--workers", "1", "--device", "cpu", "--out", str(tmp_path)]
    assert sweep.main(argv) == 1
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(r["run"], r["seed"]) for r in results] == [("ok", 0)]
    assert "| ok |" in (tmp_path / "SUMMARY.md").read_text()
    assert "bad s0 failed: ValueError" in capsys.readouterr().err
