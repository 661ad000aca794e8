"""scripts/bench_pipeline.py at its --quick sizes on the CPU: every figure is measured, the
ratios come from those figures, and both model paths (tiny, random GPT-2) run offline."""

import math

import pytest
import torch
from bench_pipeline import gpt2_random, main

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


def test_quick_tiny_model(capsys):
    figures = main(["--quick", "--model", "tiny", "--device", "cpu"])
    check_figures(figures)
    printed = capsys.readouterr().out
    assert "model: tiny (4 layers" in printed
    assert "GPU figures" in printed and "pending" in printed
    assert f"{figures['harvest only']:12,.0f}" in printed


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
