"""Training steps per second: our TopK SAE against SAELens's TopK training SAE.

Both run in the same process on the same batches with the same d_in, d_sae, k, batch
size and dtype; each uses its own decoder-norm handling (ours: unit-norm rows and
parallel-gradient removal; SAELens's default: rescaling activations by decoder norms).
A step is: forward with an all-alive dead-latent mask, backward, gradient clipping at 1.0,
an Adam step, zero_grad. On a GPU the shape is GPT-2 small's residual stream
(d_in 768, d_sae 24576, k 32, batch 4096); on a CPU a small one.

    python scripts/bench_sae.py              # picks the shape from the device
    python scripts/bench_sae.py --steps 50
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from labhelpers.sae import SAEConfig, TopKSAE

GPU_SHAPE = dict(d_in=768, d_sae=24576, k=32, batch=4096)
CPU_SHAPE = dict(d_in=128, d_sae=4096, k=16, batch=512)


def _sync(device: str) -> None:
    """Wait for the GPU's queued work, so the clock reads finished steps, not launches.
    ``torch.device`` so that "cuda:0" (a ``--device`` of bench_pipeline) is synchronised too."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def positive_int(text: str) -> int:
    """An argparse type: a count of steps or repeats, at least 1 (0 would divide by zero)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def ours(shape: dict, device: str):
    sae = TopKSAE(SAEConfig(d_in=shape["d_in"], d_sae=shape["d_sae"], k=shape["k"])).to(device)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
    dead = torch.zeros(shape["d_sae"], dtype=torch.bool, device=device)

    def step(x: torch.Tensor) -> None:
        loss = sae(x, dead_mask=dead).loss
        loss.backward()
        sae.remove_parallel_grads_()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sae.normalize_decoder_()

    return step


def saelens(shape: dict, device: str):
    from sae_lens.saes.sae import TrainStepInput
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    cfg = TopKTrainingSAEConfig(
        d_in=shape["d_in"], d_sae=shape["d_sae"], k=shape["k"], dtype="float32", device=device
    )
    sae = TopKTrainingSAE(cfg)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
    dead = torch.zeros(shape["d_sae"], dtype=torch.bool, device=device)

    def step(x: torch.Tensor) -> None:
        out = sae.training_forward_pass(
            TrainStepInput(
                sae_in=x,
                coefficients={},
                dead_neuron_mask=dead,
                n_training_steps=0,
                is_logging_step=False,
            )
        )
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def time_steps(step, batches: list[torch.Tensor], device: str) -> float:
    """Steps per second over one pass through ``batches``."""
    _sync(device)
    start = time.perf_counter()
    for x in batches:
        step(x)
    _sync(device)
    return len(batches) / (time.perf_counter() - start)


WARMUP_BATCHES = 3  # untimed steps per contender before compare() starts the clock


def compare(
    steps: dict, batches: list[torch.Tensor], device: str, repeats: int
) -> dict[str, float]:
    """Median steps/s of each contender; repeats alternate between them so that a busy
    machine (other jobs on a shared CPU) slows both alike."""
    for step in steps.values():  # warm-up: allocations, kernels, lazy imports
        for x in batches[:WARMUP_BATCHES]:
            step(x)
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            rates[name].append(time_steps(step, batches, device))
    return {name: statistics.median(r) for name, r in rates.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=positive_int, default=None, help="timed steps per repeat")
    parser.add_argument("--repeats", type=positive_int, default=5)
    parser.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = GPU_SHAPE if device == "cuda" else CPU_SHAPE
    n_steps = args.steps or (50 if device == "cuda" else 10)
    gen = torch.Generator().manual_seed(0)
    batches = [
        torch.randn(shape["batch"], shape["d_in"], generator=gen).to(device) for _ in range(n_steps)
    ]
    name = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"device: {name}; shape: {shape}; dtype float32; {n_steps} steps x {args.repeats} repeats"
    )
    steps = {"ours": ours(shape, device), "sae-lens": saelens(shape, device)}
    rates = compare(steps, batches, device, args.repeats)
    print(f"labhelpers TopKSAE      : {rates['ours']:8.2f} steps/s")
    print(f"sae-lens TopKTrainingSAE: {rates['sae-lens']:8.2f} steps/s")
    print(f"ratio (ours / sae-lens) : {rates['ours'] / rates['sae-lens']:.2f}x")


if __name__ == "__main__":
    main()
