"""Tokens per second of the whole pipeline (harvest + train) and of the trainer alone,
against SAELens's TopK training SAE on the same model, hook and SAE shape, in one run.

What is timed, in tokens (activations the SAE trains on; BOS positions are dropped):

1. harvest only: ``activations.harvest`` over fixed token batches (the forward pass stops
   after the hook's layer; bf16 autocast on a GPU, as ``harvest`` does); and the
   ``ShuffleBuffer`` alone, fed those activations from memory;
2. trainer only, on those pre-harvested activations, same batches for everyone:
   our ``Trainer.train_step`` (the loop learners run: lr schedule, dead-latent counters,
   logging), our bare step from ``bench_sae.ours`` and SAELens's from ``bench_sae.saelens``
   (forward, backward, clipping, Adam);
3. end to end: harvest -> ``ShuffleBuffer`` (which harvests in a background thread while
   the SAE trains) -> training. Ours is ``StreamSource`` feeding ``Trainer.run``, the
   full-profile pipeline; SAELens's step is fed by the same kind of stream over the same
   tokens, so the two differ only in the SAE's training step.

Warm-up steps (allocations, kernels, the buffer's first fill) are not timed; CUDA is
synchronised before reading the clock; the trainer-only and end-to-end figures are medians
of repeats that alternate between contenders, so a busy machine slows all of them alike.
Tokenization is not timed: the token batches are made up front (text from the bundled
corpus for the tiny model, seeded random ids for the random GPT-2, whose compute cost is
that of GPT-2 small).

    python scripts/bench_pipeline.py                      # picks model and sizes from the device
    python scripts/bench_pipeline.py --model gpt2-random  # GPT-2 small shape, random weights
    python scripts/bench_pipeline.py --quick --threads 1  # a few seconds, for the tests
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch
from bench_sae import WARMUP_BATCHES, _sync, compare, ours, positive_int, saelens

from labhelpers import activations, models
from labhelpers.sae import SAEConfig, TopKSAE
from labhelpers.train import TensorSource, TrainConfig, Trainer

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

# Per model: the hook and the sizes. ``batch`` is SAE training tokens per step,
# ``harvest_batch`` rows of ``context`` tokens per forward pass.
SIZES = {
    "gpt2-random": dict(
        hook="blocks.8.hook_resid_pre", d_sae=24576, k=32, batch=4096, context=128,
        harvest_batch=64, steps=100, warmup=10, repeats=5, buffer_batches=16,
    ),
    "tiny": dict(
        hook="blocks.2.hook_resid_pre", d_sae=4096, k=16, batch=512, context=128,
        harvest_batch=16, steps=20, warmup=3, repeats=3, buffer_batches=8,
    ),
}  # fmt: skip
QUICK = dict(
    d_sae=512, k=8, batch=128, context=32, harvest_batch=4, steps=4, warmup=2, repeats=1,
    buffer_batches=4,
)  # fmt: skip


# --- the model and its tokens ---------------------------------------------------------------


def gpt2_random(
    n_layer: int = 12, n_embd: int = 768, n_head: int = 12, device: str = "cpu"
) -> TransformerBridge:
    """A GPT-2-architecture ``TransformerBridge`` with seeded random weights; no download.

    ``GPT2Config()`` defaults are GPT-2 small. The HF model is built here and handed to
    ``boot_transformers(hf_model=...)`` with the bundled tiny model's tokenizer, so nothing
    is fetched (only its BOS id is used: the benchmark feeds token ids, not text).
    """
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf_model = GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head))
    # boot_transformers leaves a model handed to it where it is: move it first.
    hf_model = hf_model.to(device).eval()
    with models.offline():
        model = TransformerBridge.boot_transformers(
            "gpt2", hf_model=hf_model, tokenizer=models.load_tokenizer("tiny"), device=device
        )
    model.eval()
    return model


def token_batches(
    model: TransformerBridge, name: str, n_tokens: int, size: dict
) -> list[torch.Tensor]:
    """``[harvest_batch, context]`` token batches giving at least ``n_tokens`` activations."""
    context, rows_per_batch = size["context"], size["harvest_batch"]
    n_rows = math.ceil(n_tokens / (context - 1) / rows_per_batch) * rows_per_batch
    if name == "tiny":
        # Documents average ~70 tokens; generating 1 per 16 tokens leaves a wide margin.
        texts = activations.corpus_texts("train", n_documents=n_rows * context // 16, seed=0)
        rows = activations.token_rows(texts, model.tokenizer, context, n_rows)
    else:
        gen = torch.Generator().manual_seed(0)
        rows = torch.randint(0, model.cfg.d_vocab, (n_rows, context), generator=gen)
        rows[:, 0] = model.tokenizer.bos_token_id  # every row starts like a packed one
    return list(rows.split(rows_per_batch))


# --- the measurements ----------------------------------------------------------------------------


def time_harvest(
    model: TransformerBridge, hook: str, batches: list[torch.Tensor], warmup: int, device: str
) -> tuple[float, torch.Tensor]:
    """Harvest tokens/s over ``batches`` (the first ``warmup`` untimed) and the activations
    of the timed ones, ``[n_tokens, d_in]`` on ``device``."""
    for _ in activations.harvest(model, hook, batches[:warmup]):
        pass
    _sync(device)
    start = time.perf_counter()
    acts = list(activations.harvest(model, hook, batches[warmup:]))
    _sync(device)
    seconds = time.perf_counter() - start
    acts = torch.cat(acts)
    return len(acts) / seconds, acts


def make_trainer(
    source: TensorSource | activations.StreamSource, d_in: int, size: dict, device: str
) -> Trainer:
    """Our Trainer, as ``train_sae`` builds it, on a TopK SAE of the benchmark's shape."""
    sae = TopKSAE(SAEConfig(d_in=d_in, d_sae=size["d_sae"], k=size["k"])).to(device)
    cfg = TrainConfig(steps=10**9, batch_size=size["batch"], progress=False)
    return Trainer(sae, source, cfg)


def trainer_only(acts: torch.Tensor, size: dict, device: str) -> dict[str, float]:
    """Tokens/s of each training step on the same pre-harvested batches."""
    batch = size["batch"]
    batches = list(acts[: len(acts) // batch * batch].split(batch))[: size["steps"]]
    shape = dict(d_in=acts.shape[1], d_sae=size["d_sae"], k=size["k"], batch=batch)
    trainer = make_trainer(TensorSource(acts), acts.shape[1], size, device)
    steps = {
        "ours (Trainer)": trainer.train_step,
        "ours (bare step)": ours(shape, device),
        "sae-lens": saelens(shape, device),
    }
    rates = compare(steps, batches, device, size["repeats"])
    return {name: rate * batch for name, rate in rates.items()}


def stream(
    model: TransformerBridge, hook: str, batches: list[torch.Tensor], size: dict
) -> activations.ShuffleBuffer:
    """The full profile's stream: harvest in a background thread into a shuffling buffer."""
    acts = (a.cpu() for a in activations.harvest(model, hook, batches))
    buffer_size = size["buffer_batches"] * size["batch"]
    return activations.ShuffleBuffer(acts, buffer_size, size["batch"], seed=0)


def time_buffer(acts: torch.Tensor, size: dict) -> float:
    """Tokens/s that the ``ShuffleBuffer`` alone hands out, fed harvest-sized chunks of
    ``acts`` from memory: the ceiling it puts on the end-to-end figure."""
    chunks = acts.cpu().split(size["harvest_batch"] * (size["context"] - 1))
    buffer_size = size["buffer_batches"] * size["batch"]
    iterator = iter(activations.ShuffleBuffer(chunks, buffer_size, size["batch"], background=False))

    def run(n: int) -> None:
        for _ in itertools.islice(iterator, n):
            pass

    return size["steps"] * size["batch"] / time_loop(run, size["warmup"], size["steps"], "cpu")


def time_loop(run: Callable[[int], None], warmup: int, steps: int, device: str) -> float:
    """Seconds for ``run(steps)`` after an untimed ``run(warmup)``."""
    run(warmup)
    _sync(device)
    start = time.perf_counter()
    run(steps)
    _sync(device)
    return time.perf_counter() - start


def end_to_end_ours(
    model: TransformerBridge,
    hook: str,
    batches: list[torch.Tensor],
    stats: torch.Tensor,
    size: dict,
    device: str,
) -> float:
    """Tokens/s of ``StreamSource`` feeding ``Trainer.run``: our pipeline as learners run it."""
    source = activations.StreamSource(lambda: stream(model, hook, batches, size), stats)
    trainer = make_trainer(source, stats.shape[1], size, device)
    seconds = time_loop(
        lambda n: trainer.run(until=trainer.step + n), size["warmup"], size["steps"], device
    )
    source.close()  # the harvesting thread stops instead of waiting for a reader
    return size["steps"] * size["batch"] / seconds


def end_to_end_saelens(
    model: TransformerBridge,
    hook: str,
    batches: list[torch.Tensor],
    stats: torch.Tensor,
    size: dict,
    device: str,
) -> float:
    """Tokens/s of SAELens's training step fed by the same stream over the same tokens."""
    shape = dict(d_in=stats.shape[1], d_sae=size["d_sae"], k=size["k"], batch=size["batch"])
    step = saelens(shape, device)
    iterator: Iterator[torch.Tensor] = iter(stream(model, hook, batches, size))

    def run(n: int) -> None:
        for x in itertools.islice(iterator, n):
            step(x.to(device))

    seconds = time_loop(run, size["warmup"], size["steps"], device)
    for _ in iterator:
        pass
    return size["steps"] * size["batch"] / seconds


def end_to_end(
    model: TransformerBridge,
    hook: str,
    batches: list[torch.Tensor],
    stats: torch.Tensor,
    size: dict,
    device: str,
) -> dict[str, float]:
    """Median end-to-end tokens/s of each pipeline, each repeat a fresh stream over the same
    tokens; repeats alternate between the two, as ``bench_sae.compare`` does."""
    runs = {"ours (Trainer)": end_to_end_ours, "sae-lens": end_to_end_saelens}
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(size["repeats"]):
        for name, run in runs.items():
            rates[name].append(run(model, hook, batches, stats, size, device))
    return {name: statistics.median(r) for name, r in rates.items()}


# --- the report ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SIZES), default=None, help="default: by device")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--steps", type=positive_int, default=None, help="timed training steps")
    parser.add_argument(
        "--repeats", type=positive_int, default=None, help="repeats of the timed parts"
    )
    parser.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    parser.add_argument("--hook", default=None, help="default: the model's in SIZES")
    parser.add_argument(
        "--gpt2-layers", type=positive_int, default=12, help="gpt2-random's n_layer"
    )
    parser.add_argument("--gpt2-width", type=positive_int, default=768, help="gpt2-random's n_embd")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the tests")
    return parser.parse_args(argv)


def setup(args: argparse.Namespace) -> tuple[str, str, dict]:
    """The device, the model's name and its sizes, from the arguments."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    name = args.model or ("gpt2-random" if device.startswith("cuda") else "tiny")
    size = dict(SIZES[name], **(QUICK if args.quick else {}))
    for key in ("steps", "repeats", "hook"):
        if getattr(args, key) is not None:
            size[key] = getattr(args, key)
    return device, name, size


def load(name: str, args: argparse.Namespace, device: str) -> TransformerBridge:
    if name == "tiny":
        return models.load_model("tiny", device=device)
    n_head = max(1, args.gpt2_width // 64)  # GPT-2's heads are 64 wide
    return gpt2_random(args.gpt2_layers, args.gpt2_width, n_head, device)


# What the pipeline aims for on one H100 with gpt2-random: goals, not results. The report
# prints them as targets only, never as figures of the run.
GPU_TARGETS = "end to end at least 300k tokens/s; trainer only at least 1.5x sae-lens's tokens/s"


def print_report(figures: dict[str, float], device: str) -> None:
    """The measured figures, then a note on where they were measured. Every number in the
    table was measured in this run; the GPU targets are printed only as targets."""
    print(f"{'':38}{'tokens/s':>12}")
    for key, value in figures.items():
        if not key.startswith("ratio"):
            print(f"{key:38}{value:12,.0f}")
    for key, value in figures.items():
        if key.startswith("ratio"):
            print(f"{key:38}{value:11.2f}x")
    if device.startswith("cuda"):
        print("Every figure above was measured in this run, on the GPU named at the top.")
    else:
        print(
            "Every figure above was measured in this run, on the CPU. No GPU ran, so no "
            "GPU figure was measured in this run: run this script on a GPU to measure them."
        )
    print(f"Targets for one H100 on gpt2-random (targets, not measurements): {GPU_TARGETS}.")


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the three measurements, print them and return them (tokens/s and ratios)."""
    from importlib.metadata import version

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, name, size = setup(args)
    model = load(name, args, device)
    d_in = int(model.cfg.d_model)
    where = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "CPU"
    print(
        f"device: {where}, {torch.get_num_threads()} CPU threads; torch {torch.__version__}, "
        f"transformer-lens {version('transformer-lens')}, sae-lens {version('sae-lens')}"
    )
    print(
        f"model: {name} ({model.cfg.n_layers} layers, d_model {d_in}), hook {size['hook']}; "
        f"SAE: TopK d_in {d_in}, d_sae {size['d_sae']}, k {size['k']}, float32; "
        f"batch {size['batch']} tokens, context {size['context']}, "
        f"{size['steps']} timed steps after {size['warmup']} warm-up steps end to end "
        f"({WARMUP_BATCHES} in the trainer-only comparison), {size['repeats']} repeats"
    )
    n_steps = size["warmup"] + size["steps"]
    # Enough tokens for the harvest's two warm-up batches, the training steps and a full
    # buffer beyond them, so that the stream is still harvesting during the last timed step.
    harvest_warmup = 2
    n_tokens = harvest_warmup * size["harvest_batch"] * (size["context"] - 1)
    n_tokens += (n_steps + size["buffer_batches"]) * size["batch"]
    batches = token_batches(model, name, n_tokens, size)

    figures = {}
    figures["harvest only"], acts = time_harvest(
        model, size["hook"], batches, harvest_warmup, device
    )
    figures["shuffle buffer only"] = time_buffer(acts, size)
    for key, value in trainer_only(acts, size, device).items():
        figures[f"trainer only: {key}"] = value
    stats = acts[:4096].cpu()
    for key, value in end_to_end(model, size["hook"], batches, stats, size, device).items():
        figures[f"end to end: {key}"] = value
    sl_trainer = figures["trainer only: sae-lens"]
    figures["ratio trainer, Trainer / sae-lens"] = (
        figures["trainer only: ours (Trainer)"] / sl_trainer
    )
    figures["ratio trainer, bare step / sae-lens"] = (
        figures["trainer only: ours (bare step)"] / sl_trainer
    )
    figures["ratio end to end, ours / sae-lens"] = (
        figures["end to end: ours (Trainer)"] / figures["end to end: sae-lens"]
    )
    print_report(figures, device)
    return figures


if __name__ == "__main__":
    main()
