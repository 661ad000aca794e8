"""scripts/bench_pipeline.py at its --quick sizes on the CPU: every figure is measured, the
ratios come from those figures, and both model paths (tiny, random GPT-2) run offline."""

import math
import re

import pytest
import torch
from bench_pipeline import gpt2_random, main, print_report

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
