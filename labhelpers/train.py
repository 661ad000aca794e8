"""One training loop for every SAE in ``labhelpers.sae``, with checkpoints that resume exactly.

What a step does, in order:

1. take the next batch from the data source and scale it by ``input_scale`` (chosen once
   so that ``E||x||^2 = d_in``; it is folded back into the weights at the end); a
   transcoder's targets get their own ``target_scale`` the same way;
2. forward, with the current sparsity scale (warm-up) and the dead-latent mask (AuxK);
3. backward; remove the decoder-row-parallel gradient (unit-norm architectures); clip;
4. an Adam step with the scheduled learning rate (linear warm-up, then linear decay to 0
   over the last ``lr_decay_fraction`` of training); renormalise decoder rows;
5. update "steps since each latent last fired"; latents silent for ``dead_window`` steps
   are dead; optionally resample them every ``resample_every`` steps (not during the decay).

A data source is any object with ``next_batch(batch_size) -> [batch, d_in]`` (for a
transcoder, ``[batch, 2, d_in]``: input and target, see ``SAE.split_batch``),
``sample(n) -> (x, ...)`` for statistics that must not consume training data,
``state_dict()`` and ``load_state_dict()`` (see :class:`TensorSource` and
``labhelpers.synthetic.SyntheticSource``).

A checkpoint is a folder with ``trainer.safetensors``: the SAE weights, Adam moments, the
dead-latent counters and the resampling RNG state (as uint8) as tensors, and the step,
input scale, data position, history and configs as JSON in the file's metadata. One file
replaced by one rename, so a run killed while saving keeps its previous checkpoint.
``trainer.json`` beside it is a copy of that JSON for people to read. No pickles.

A loss that turns NaN or inf stops training with a ``FloatingPointError`` that says
whether the inputs or the optimisation were to blame, and a checkpoint is never
overwritten by weights that are not finite.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import signal
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from labhelpers import metrics
from labhelpers.io import save_sae
from labhelpers.sae import SAE

__all__ = ["DataSource", "TensorSource", "TrainConfig", "Trainer", "resamples_at", "train_sae"]

CHECKPOINT_FILE = "trainer.safetensors"
SUMMARY_FILE = "trainer.json"
# TrainConfig fields a resumed run may change: they decide what is shown, and where and
# when the state is saved, never what a step computes. Every other field changes the
# remaining steps (``steps`` sets the schedules and the resampling rounds) or belongs to
# another run (a seed), so a difference there means the wrong folder or the wrong settings.
_MAY_DIFFER_ON_RESUME = frozenset({"progress", "log_every", "checkpoint_dir", "checkpoint_every"})


class DataSource(Protocol):
    def next_batch(self, batch_size: int) -> torch.Tensor: ...
    def sample(self, n: int) -> tuple[torch.Tensor, ...]: ...
    def state_dict(self) -> dict[str, int]: ...
    def load_state_dict(self, state: dict[str, int]) -> None: ...


class TensorSource:
    """Shuffled batches from a fixed tensor of activations ``[n, d_in]``, epoch after epoch.

    Epoch ``e`` uses the permutation drawn from seed ``(seed, e)``; the state is (epoch,
    index) so a resumed run reads exactly the batches the original would have.
    """

    def __init__(self, data: torch.Tensor, seed: int = 0) -> None:
        self.data, self.seed = data, seed
        self.epoch, self.index = 0, 0
        self._perm_epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _permutation(self) -> torch.Tensor:
        if self._perm_epoch != self.epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._perm, self._perm_epoch = torch.randperm(len(self.data), generator=gen), self.epoch
        return self._perm

    def next_batch(self, batch_size: int) -> torch.Tensor:
        if self.index + batch_size > len(self.data):  # drop the ragged end of an epoch
            self.epoch, self.index = self.epoch + 1, 0
        rows = self._permutation()[self.index : self.index + batch_size]
        self.index += batch_size
        return self.data[rows]

    def sample(self, n: int) -> tuple[torch.Tensor]:
        return (self.data[:n],)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 512
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    lr_warmup_steps: int = 50
    lr_decay_fraction: float = 0.2  # linear decay to 0 over this last part of training
    sparsity_warmup_steps: int = 0  # the penalty ramps from 0 to full over these steps
    grad_clip: float | None = 1.0
    dead_window: int = 200  # steps without firing before a latent counts as dead
    resample_every: int | None = None  # resample dead latents every N steps (None: never)
    normalize_inputs: bool = True  # scale inputs so that E||x||^2 = d_in
    init_b_dec_to_mean: bool = True
    stats_samples: int = 4096
    log_every: int = 50
    seed: int = 0  # the resampling RNG
    progress: bool = True
    checkpoint_dir: str | None = None  # where run() saves the full state (None: nowhere)
    checkpoint_every: int = 0  # save every N steps (0: only when interrupted)


def resamples_at(cfg: TrainConfig, step: int) -> bool:
    """Whether dead latents are resampled once ``step`` steps are done: every
    ``resample_every`` steps, but none later than one ``dead_window`` before the learning
    rate starts to decay, so that a revived latent has time to learn at the full rate."""
    last = cfg.steps * (1 - cfg.lr_decay_fraction) - cfg.dead_window
    return bool(cfg.resample_every) and step % cfg.resample_every == 0 and 0 < step <= last


@contextlib.contextmanager
def _deferred_interrupt() -> Iterator[Callable[[], bool]]:
    """Turn Ctrl-C (or Jupyter's "interrupt kernel") into a flag checked between steps, so
    that a step is never cut in half and the state saved afterwards is consistent."""
    flag = {"set": False}
    if threading.current_thread() is not threading.main_thread():
        yield lambda: flag["set"]
        return

    def handler(signum: int, frame: Any) -> None:
        flag["set"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: flag["set"]
    finally:
        signal.signal(signal.SIGINT, previous)


class Trainer:
    """Holds everything a run needs; ``run()`` trains, ``save/load_checkpoint`` pause it."""

    def __init__(self, sae: SAE, source: DataSource, cfg: TrainConfig) -> None:
        self.sae, self.source, self.cfg = sae, source, cfg
        self.optimizer = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.step = 0
        self.device = sae.W_enc.device
        self.steps_since_fired = torch.zeros(sae.cfg.d_sae, dtype=torch.long, device=self.device)
        self.rng = torch.Generator().manual_seed(cfg.seed)
        self.history: dict[str, list[float]] = defaultdict(list)
        self.input_scale = self.target_scale = 1.0
        stats = source.sample(cfg.stats_samples)[0].to(sae.W_enc)
        if not torch.isfinite(stats).all():
            raise ValueError(
                "The training activations hold NaN or inf (seen in the sample that sets the "
                "input scale): find where they come from before training an SAE on them."
            )
        inputs, targets = sae.split_batch(stats)
        if cfg.normalize_inputs:
            self.input_scale = float((sae.cfg.d_in / inputs.pow(2).sum(-1).mean()).sqrt())
            # An MLP's output is several times smaller than its input; on one shared scale
            # a transcoder leaves about half its latents dead (measured on the tiny model).
            self.target_scale = float((sae.cfg.d_in / targets.pow(2).sum(-1).mean()).sqrt())
        if cfg.init_b_dec_to_mean:
            with torch.no_grad():
                sae.b_dec.copy_(targets.mean(0) * self.target_scale)

    # --- schedules: pure functions of the step, so they need no saved state ---------------
    def lr_at(self, step: int) -> float:
        cfg = self.cfg
        warm = min(1.0, (step + 1) / max(cfg.lr_warmup_steps, 1))
        decay_start = cfg.steps * (1 - cfg.lr_decay_fraction)
        decay = (
            1.0 if step < decay_start else max(0.0, (cfg.steps - step) / (cfg.steps - decay_start))
        )
        return cfg.lr * warm * decay

    def sparsity_scale_at(self, step: int) -> float:
        return min(1.0, (step + 1) / max(self.cfg.sparsity_warmup_steps, 1))

    def dead_mask(self) -> torch.Tensor:
        """[d_sae] bool: latents that have not fired in the last ``dead_window`` steps."""
        return self.steps_since_fired >= self.cfg.dead_window

    # --- one step ---------------------------------------------------------------------------
    def train_step(self, x: torch.Tensor) -> dict[str, float] | None:
        sae, cfg, step = self.sae, self.cfg, self.step
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(step)
        out = sae(x, dead_mask=self.dead_mask(), sparsity_scale=self.sparsity_scale_at(step))
        loss = float(out.loss.detach())
        if not math.isfinite(loss):  # checked before the step, so the weights stay finite
            raise FloatingPointError(self._non_finite_message(x, loss))
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        sae.remove_parallel_grads_()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(sae.parameters(), cfg.grad_clip)
        self.optimizer.step()
        sae.normalize_decoder_()
        fired = (out.z.detach() != 0).any(0)
        self.steps_since_fired += 1
        self.steps_since_fired[fired] = 0
        self.step += 1
        if resamples_at(cfg, self.step):
            self.resample_dead(x)
        if self.step % cfg.log_every == 0 or self.step == cfg.steps:
            with torch.no_grad():
                row = {name: float(value) for name, value in out.losses.items()}
                row.update(
                    step=self.step,
                    loss=loss,
                    l0=metrics.l0(out.z),
                    fvu=metrics.fvu(sae.split_batch(x)[1], out.x_hat),
                    dead_fraction=float(self.dead_mask().float().mean()),
                    lr=self.lr_at(step),
                )
            for name, value in row.items():
                self.history[name].append(value)
            return row
        return None

    def _non_finite_message(self, x: torch.Tensor, loss: float) -> str:
        if not torch.isfinite(x).all():
            cause = (
                "This batch of inputs holds NaN or inf: check the activations with torch.isfinite."
            )
        else:
            clip = " or set grad_clip" if not self.cfg.grad_clip else ""
            cause = (
                "This batch of inputs is finite, so the weights are at fault: training diverged. "
                f"Try a lower lr (now {self.cfg.lr}){clip}."
            )
        return f"The loss is {loss} at step {self.step}. {cause} Saved checkpoints predate it."

    @torch.no_grad()
    def resample_dead(self, x: torch.Tensor) -> int:
        """Point dead latents at inputs the SAE reconstructs badly: a variant of Anthropic's
        (2023) resampling.

        Inputs are drawn with probability proportional to their squared loss. Anthropic set
        a dead latent's decoder row to the drawn input itself; here it is that input's
        normalised residual, the part the SAE misses. The encoder column takes the same
        direction (a transcoder's: the input's own direction), scaled to 0.2 x the mean
        live encoder norm, and the encoder bias 0. An architecture's own per-latent
        parameters restart at their initial values (``SAE.reset_latents_``: a JumpReLU
        threshold, Gated's magnitude path), and Adam's moments for all of them at zero.
        Returns how many were resampled.
        """
        sae, dead = self.sae, self.dead_mask()
        n_dead = int(dead.sum())
        if n_dead == 0 or n_dead == len(dead):
            return 0
        inputs, targets = sae.split_batch(x)
        # In eval mode, so that this extra pass does not count in BatchTopK's threshold average.
        was_training = sae.training
        x_hat = sae.eval()(x).x_hat
        sae.train(was_training)
        loss = (targets - x_hat).pow(2).sum(-1)
        # The RNG lives on the CPU so that its state is the same on every device.
        weights = (loss.pow(2) + 1e-12).cpu()
        rows = torch.multinomial(weights, n_dead, replacement=True, generator=self.rng).to(x.device)
        directions = _unit_rows(targets[rows] - x_hat[rows])
        # An SAE reads and writes the same space; a transcoder reads the input it missed.
        read = directions if inputs is targets else _unit_rows(inputs[rows])
        dec_norm = 1.0 if sae.unit_norm_decoder else float(sae.W_dec[~dead].norm(dim=1).mean())
        enc_norm = float(sae.W_enc[:, ~dead].norm(dim=0).mean())
        sae.W_dec[dead] = directions * dec_norm
        sae.W_enc[:, dead] = read.T * 0.2 * enc_norm
        sae.b_enc[dead] = 0.0
        sae.reset_latents_(dead)
        for name, param in sae.named_parameters():
            state = self.optimizer.state.get(param, {})
            for moment in ("exp_avg", "exp_avg_sq"):
                if moment in state and name != "b_dec":  # every other parameter is per latent
                    if name == "W_enc":
                        state[moment][:, dead] = 0.0
                    else:
                        state[moment][dead] = 0.0
        self.steps_since_fired[dead] = 0
        return n_dead

    # --- the loop -----------------------------------------------------------------------------
    def run(self, until: int | None = None) -> dict[str, list[float]]:
        """Train from the current step up to ``until`` (default: ``cfg.steps``); return the history."""
        until = self.cfg.steps if until is None else min(until, self.cfg.steps)
        self.sae.train()
        bar = tqdm(
            total=self.cfg.steps, initial=self.step, disable=not self.cfg.progress, leave=False
        )
        # enable_grad: a notebook that turned gradients off to read a model can still train
        with _deferred_interrupt() as interrupted, torch.enable_grad():
            while self.step < until:
                row = self.train_step(self.scaled(self.source.next_batch(self.cfg.batch_size)))
                bar.update(1)
                if row is not None:
                    bar.set_postfix(l0=f"{row['l0']:.1f}", fvu=f"{row['fvu']:.3f}")
                every = self.cfg.checkpoint_every
                if self.cfg.checkpoint_dir and every and self.step % every == 0:
                    self.save_checkpoint(self.cfg.checkpoint_dir)
                if interrupted():
                    break
        bar.close()
        self.sae.eval()
        if interrupted():
            if self.cfg.checkpoint_dir:
                self.save_checkpoint(self.cfg.checkpoint_dir)
                print(
                    f"Interrupted after step {self.step}; the full state is in {self.cfg.checkpoint_dir}: "
                    "trainer.load_checkpoint(...) then trainer.run() picks up exactly there."
                )
            raise KeyboardInterrupt
        return dict(self.history)

    def scaled(self, batch: torch.Tensor) -> torch.Tensor:
        """A batch from the source, on the SAE's device, times the input scale; for a
        transcoder's ``[batch, 2, d_in]`` pairs, the targets times the target scale."""
        batch = batch.to(self.sae.W_enc)
        if batch.ndim == 2:
            return batch * self.input_scale
        return batch * batch.new_tensor([self.input_scale, self.target_scale])[:, None]

    def fold_normalization(self) -> None:
        """Fold the input (and target) scale into the weights: the SAE then takes raw activations."""
        self.sae.fold_input_scale_(self.input_scale, self.target_scale)
        self.input_scale = self.target_scale = 1.0

    def export(self, path: str | Path, **metadata: Any) -> Path:
        """Save the SAE for inference in SAELens's layout, with ``input_scale`` folded in.

        Works on a copy, so training can go on afterwards. ``metadata`` goes to ``save_sae``
        (``hook_name``, ``model_name``).
        """
        sae = copy.deepcopy(self.sae)
        sae.fold_input_scale_(self.input_scale, self.target_scale)
        return save_sae(sae, path, **metadata)

    # --- checkpoints --------------------------------------------------------------------------
    def save_checkpoint(self, path: str | Path) -> Path:
        """Write the complete training state to the folder ``path``."""
        path = Path(path)
        if not all(torch.isfinite(p).all() for p in self.sae.parameters()):
            raise FloatingPointError(
                f"Not saving step {self.step} to {path}: the SAE's weights hold NaN or inf "
                "(any checkpoint already there is kept)."
            )
        path.mkdir(parents=True, exist_ok=True)
        tensors = {f"sae.{k}": v.detach().cpu() for k, v in self.sae.state_dict().items()}
        optim = self.optimizer.state_dict()
        for index, state in optim["state"].items():
            for key, value in state.items():
                tensors[f"optim.{index}.{key}"] = value.detach().cpu()
        tensors["steps_since_fired"] = self.steps_since_fired.cpu()
        tensors["rng_state"] = self.rng.get_state()
        scalars = {
            "step": self.step,
            "input_scale": self.input_scale,
            "target_scale": self.target_scale,
            "source": self.source.state_dict(),
            "history": dict(self.history),
            "param_groups": optim["param_groups"],
            "train_config": asdict(self.cfg),
            "sae_config": self.sae.cfg.to_dict(),
            "architecture": type(self.sae).__name__,
        }
        text = json.dumps(scalars, indent=1)
        tensors = {k: v.contiguous() for k, v in tensors.items()}
        _replace(
            path / CHECKPOINT_FILE, lambda f: save_file(tensors, f, metadata={"trainer": text})
        )
        _replace(path / SUMMARY_FILE, lambda f: Path(f).write_text(text))
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore the state written by :meth:`save_checkpoint` into this trainer.

        Refuses, naming the fields, a checkpoint written with another architecture, SAE
        config or training config (apart from ``_MAY_DIFFER_ON_RESUME``).
        """
        scalars, tensors = _read_checkpoint(Path(path))
        if scalars["architecture"] != type(self.sae).__name__:
            raise ValueError(
                f"checkpoint is for a {scalars['architecture']}, not a {type(self.sae).__name__}"
            )
        differing = _differences("SAEConfig", scalars["sae_config"], self.sae.cfg.to_dict())
        differing += _differences(
            "TrainConfig", scalars["train_config"], asdict(self.cfg), _MAY_DIFFER_ON_RESUME
        )
        if differing:
            raise ValueError(
                f"the checkpoint in {path} was written by a run with other settings: "
                f"{'; '.join(differing)}. Build the SAE and the TrainConfig as that run did."
            )
        self.sae.load_state_dict(
            {k.removeprefix("sae."): v for k, v in tensors.items() if k.startswith("sae.")}
        )
        state: dict[int, dict[str, torch.Tensor]] = defaultdict(dict)
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                state[int(index)][name] = value
        self.optimizer.load_state_dict(
            {"state": dict(state), "param_groups": scalars["param_groups"]}
        )
        self.steps_since_fired = tensors["steps_since_fired"].to(self.device)
        self.rng.set_state(tensors["rng_state"])
        self.step = scalars["step"]
        self.input_scale = scalars["input_scale"]
        self.target_scale = scalars.get("target_scale", self.input_scale)  # older checkpoints
        self.source.load_state_dict(scalars["source"])
        self.history = defaultdict(list, scalars["history"])


def _differences(
    label: str, saved: dict[str, Any], ours: dict[str, Any], allowed: frozenset[str] = frozenset()
) -> list[str]:
    """One line per config field whose saved value (from JSON) is not ours, except ``allowed``."""
    ours = json.loads(json.dumps(ours))  # as the checkpoint holds it: a tuple becomes a list
    return [
        f"{label}.{name} (checkpoint {saved.get(name)!r}, this trainer {ours.get(name)!r})"
        for name in sorted((saved.keys() | ours.keys()) - allowed)
        if saved.get(name) != ours.get(name)
    ]


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)


def _replace(target: Path, write: Callable[[str], Any]) -> None:
    """Write ``target`` through a temporary file and one rename: readers see old or new, whole."""
    partial = target.with_name(target.name + ".partial")
    write(str(partial))
    os.replace(partial, target)


def _read_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON state and the tensors of the checkpoint in folder ``path``, or a clear error."""
    file = path / CHECKPOINT_FILE
    if not file.is_file():
        raise FileNotFoundError(f"No checkpoint in {path}: expected {CHECKPOINT_FILE} there.")
    try:
        with safe_open(str(file), framework="pt") as f:
            text = (f.metadata() or {}).get("trainer")
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except SafetensorError as error:
        raise ValueError(f"{file} is damaged and cannot be read ({error}).") from error
    if text is None:
        raise ValueError(
            f"{file} holds no trainer state: Trainer.save_checkpoint did not write it."
        )
    return json.loads(text), tensors


def train_sae(sae: SAE, source: DataSource, cfg: TrainConfig) -> dict[str, list[float]]:
    """Train ``sae`` for ``cfg.steps`` steps, fold the input scaling into it, return the history."""
    trainer = Trainer(sae, source, cfg)
    history = trainer.run()
    trainer.fold_normalization()
    return history
