"""scripts/bench_pipeline.py at its --quick sizes on the CPU: every figure is measured, the
ratios come from those figures, and both model paths (tiny, random GPT-2) run offline."""

import math
import re

import bench_sae
import pytest
import torch
from bench_pipeline import gpt2_random, main, parse_args, print_report

pytestmark = pytest.mark.usefixtures("one_thread")

RATES = [
    "harvest only",
    "shuffle buffer only",
    "trainer only: ours (Trainer)",
    "trainer only: ours (bare step)",
    "trainer only: sae-lens",
    "end to end: ours (Trainer)",
    "end to end: sae-lens",
]


def check_figures(figures: dict[str, float]) -> None:
    for key in RATES:
        assert math.isfinite(figures[key]) and figures[key] > 0, key
    assert figures["ratio trainer, Trainer / sae-lens"] == pytest.approx(
        figures["trainer only: ours (Trainer)"] / figures["trainer only: sae-lens"]
    )
    assert figures["ratio trainer, bare step / sae-lens"] == pytest.approx(
        figures["trainer only: ours (bare step)"] / figures["trainer only: sae-lens"]
    )
    assert figures["ratio end to end, ours / sae-lens"] == pytest.approx(
        figures["end to end: ours (Trainer)"] / figures["end to end: sae-lens"]
    )
    assert len(figures) == len(RATES) + 3


def check_report(printed: str, figures: dict[str, float]) -> str:
    """Every number the report prints is measured or called a target: the table's rows are
    ``figures`` (each to the digits printed), and any number in the notes after the table
    stands in a sentence that calls it a target first. Returns the notes."""
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split() == ["tokens/s"]) + 1
    order = sorted(figures, key=lambda key: key.startswith("ratio"))  # ratios last
    table, notes = lines[start : start + len(order)], " ".join(lines[start + len(order) :])
    for line, key in zip(table, order, strict=True):
        assert line[:38].strip() == key
        number = line[38:].strip()
        if key.startswith("ratio"):
            assert number.endswith("x")
            assert float(number[:-1]) == pytest.approx(figures[key], abs=0.005 + 1e-9)
        else:
            assert float(number.replace(",", "")) == pytest.approx(figures[key], abs=0.5 + 1e-9)
    for sentence in re.split(r"(?<=\.)\s+", notes):
        digit = re.search(r"\d", sentence)
        if digit:  # the sentence says "target" before its first number
            assert "target" in sentence[: digit.start()].lower(), f"unmeasured: {sentence!r}"
    return notes


def test_quick_tiny_model(capsys):
    figures = main(["--quick", "--model", "tiny", "--device", "cpu"])
    check_figures(figures)
    printed = capsys.readouterr().out
    assert "model: tiny (4 layers" in printed
    notes = check_report(printed, figures)
    assert "no GPU figure was measured in this run" in notes


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:0"])
def test_the_report_says_what_was_measured(capsys, device):
    """The note under the table, with made-up figures: on the CPU it says that no GPU
    figure was measured; on a GPU it does not; on both, the targets are called targets."""
    figures = {key: 1000.0 + i for i, key in enumerate(RATES)}
    figures["ratio trainer, Trainer / sae-lens"] = 1.25
    print_report(figures, device)
    notes = check_report(capsys.readouterr().out, figures)
    assert ("no GPU figure was measured" in notes) == (device == "cpu")
    assert "Targets" in notes and "pending" not in notes


def test_quick_random_gpt2(capsys):
    argv = ["--quick", "--model", "gpt2-random", "--device", "cpu"]
    argv += ["--gpt2-layers", "2", "--gpt2-width", "64", "--hook", "blocks.1.hook_resid_pre"]
    figures = main(argv)
    check_figures(figures)
    assert "model: gpt2-random (2 layers, d_model 64), hook blocks.1.hook_resid_pre" in (
        capsys.readouterr().out
    )


def test_gpt2_random_is_seeded_and_offline():
    first, second = (gpt2_random(n_layer=1, n_embd=32, n_head=2) for _ in range(2))
    assert (first.cfg.n_layers, first.cfg.d_model, first.cfg.d_vocab) == (1, 32, 50257)
    for (name, a), (_, b) in zip(first.named_parameters(), second.named_parameters()):
        assert torch.equal(a, b), name
    tokens = torch.randint(0, 50257, (2, 8), generator=torch.Generator().manual_seed(0))
    _, cache = first.run_with_cache(tokens, names_filter=["blocks.0.hook_resid_pre"])
    assert cache["blocks.0.hook_resid_pre"].shape == (2, 8, 32)


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_the_clock_waits_for_the_gpu_whichever_way_it_is_named(monkeypatch, device):
    """Without a synchronise, a GPU step's time is only its launch: "cuda:0" (a --device
    bench_pipeline accepts) was left unsynchronised, so its figures were not step times."""
    waited = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waited.append(device))
    bench_sae._sync(device)
    assert len(waited) == 1
    assert waited[0] is None or torch.device(waited[0]).type == "cuda"  # None: the current GPU
    bench_sae._sync("cpu")
    assert len(waited) == 1


@pytest.mark.parametrize("flag", ["--steps", "--repeats"])
def test_a_count_below_one_is_refused_with_the_flag_named(capsys, flag):
    # --repeats 0 took the median of no figures, --steps 0 divided by zero, deep in the run
    with pytest.raises(SystemExit):
        parse_args([flag, "0"])
    assert f"argument {flag}: must be at least 1, not 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_sae.main([flag, "0"])
    assert f"argument {flag}: must be at least 1, not 0" in capsys.readouterr().err
