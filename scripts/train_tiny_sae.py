"""Train the small TopK SAEs bundled in data/tiny_sae/ (SAELens layout), one per hook,
and the TopK transcoders in data/tiny_transcoder/, one per MLP.

Notebooks 05-07 load these, so none of them needs notebook 04 to have run. The settings
are notebook 04's quick profile (tests/test_train_tiny_sae.py keeps the two equal); the
same seed gives the same SAEs on the same machine.

    python scripts/train_tiny_sae.py                       # the SAEs and transcoders below
    python scripts/train_tiny_sae.py --hooks blocks.2.hook_resid_pre --layers
    python scripts/train_tiny_sae.py --hooks --layers 0    # block 0's transcoder only
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from labhelpers import activations, env, io, metrics, models, transcoder
from labhelpers.sae import SAEConfig, make_sae
from labhelpers.train import TrainConfig, Trainer
from labhelpers.transcoder import Transcoder

OUT = env.DATA_DIR / "tiny_sae"
HOOKS = ["blocks.1.hook_resid_pre", "blocks.2.hook_resid_pre", "blocks.3.hook_resid_pre"]
TRANSCODER_OUT = env.DATA_DIR / "tiny_transcoder"
TRANSCODER_LAYERS = [0, 1, 2, 3]  # every MLP of the tiny model, saved as blocks.L.hook_mlp_out
SETTINGS = dict(
    context=128,
    train_tokens=400_000,
    d_sae=1024,
    k=32,
    batch=1024,
    steps=1500,
    lr=2e-3,
    dead_window=300,
    eval_tokens=50_000,
    eval_rows=64,
)


def train_one(model, hook: str | tuple[str, str], out: Path) -> dict:
    """Train, evaluate and save one SAE (``hook`` a name) or transcoder (``hook`` a pair)."""
    s = SETTINGS
    env.seed_everything(0)
    source = activations.training_source(
        model,
        hook,
        lambda: activations.corpus_texts("train"),
        s["train_tokens"],
        s["batch"],
        s["context"],
    )
    cfg = SAEConfig(d_in=model.cfg.d_model, d_sae=s["d_sae"], k=s["k"])
    sae = make_sae("topk", cfg) if isinstance(hook, str) else Transcoder(cfg)
    trainer = Trainer(
        sae,
        source,
        TrainConfig(
            steps=s["steps"],
            batch_size=s["batch"],
            lr=s["lr"],
            dead_window=s["dead_window"],
            sparsity_warmup_steps=s["steps"] // 5,
        ),
    )
    start = time.perf_counter()
    trainer.run()
    trainer.fold_normalization()
    train_seconds = round(time.perf_counter() - start, 1)  # training only, not the evaluation
    eval_acts = activations.collect(
        model,
        hook,
        activations.corpus_texts("val", seed=1),
        s["eval_tokens"],
        s["context"],
        progress=False,
    )
    rows = activations.token_rows(
        activations.corpus_texts("val", seed=2), model.tokenizer, s["context"], s["eval_rows"]
    )
    result = {
        **metrics.evaluate(sae, eval_acts),
        **metrics.ce_loss_recovered(model, sae, hook, rows),
        "train_seconds": train_seconds,
        "settings": s,
    }
    folder = out / (hook if isinstance(hook, str) else hook[1])
    io.save_sae(sae, folder, hook_name=hook, model_name="tiny")
    (folder / "metrics.json").write_text(json.dumps(result, indent=2))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hooks", nargs="*", default=HOOKS, help="SAE hooks (none: no SAEs)")
    parser.add_argument(
        "--layers", nargs="*", type=int, default=TRANSCODER_LAYERS, help="transcoders' blocks"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--transcoder-out", type=Path, default=TRANSCODER_OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)  # small matrices: one thread is as fast and leaves a core free
    model = models.load_model("tiny", device="cpu")
    jobs = [(hook, args.out) for hook in args.hooks]
    jobs += [(transcoder.mlp_hooks(layer), args.transcoder_out) for layer in args.layers]
    for hook, out in jobs:
        result = train_one(model, hook, out)
        print(hook, {k: round(v, 4) for k, v in result.items() if isinstance(v, float)}, flush=True)


if __name__ == "__main__":
    main()
