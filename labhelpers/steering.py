"""Steering: add ``alpha * d`` to the activation at one hook point, and sweep ``alpha``.

If a feature's decoder direction ``d`` (a row of ``W_dec``) really carries a concept,
pushing the activation along it should push the model's behaviour towards that concept,
and more so as ``alpha`` grows. A sweep over ``alpha`` measures that dose-response curve.

Why controls matter
-------------------
A large enough push along *any* direction breaks a small model, and a broken model can
move a metric too (it stops refusing, or refuses everything, or emits noise). So a
curve that rises with ``alpha`` shows little on its own. Each row of a sweep therefore
also records:

* the same target metric steered along a **control direction** of the same norm (a
  random direction, or an unrelated feature's): if it moves the target as much, the
  effect is not specific to ``d``;
* **negative-control metrics**: behaviour that should not change (refusals on
  unrelated prompts); if they move, ``d`` is not specific to the target behaviour;
* a **side effect**: KL(unsteered || steered) of the next-token distributions on
  unrelated text, which says how much of the model's ordinary behaviour was damaged.

Choosing what to steer, and measuring it cheaply
------------------------------------------------
``activations.token_acts`` and ``contrast_features`` find *candidate* features (those that fire more
where a concept is present); ``steering_effects`` tests each candidate by intervening,
with a smooth one-pass metric such as ``refusal_margin`` (refusal token's logit minus the
best other token's). ``steering_gradient`` gives that metric's first-order response to a
push along any direction, from one backward pass. ``greedy_refusals`` gives the greedy
refusal verdicts of a whole list of prompts from one teacher-forced forward pass in most
cases.

Positions and generation
------------------------
``model.generate`` keeps a KV cache: its first forward pass sees the whole prompt
``[batch, pos, d]``, each later one only the newest token ``[batch, 1, d]``. The hook
follows one rule that gives the same result with and without the cache:

* a call that sees several positions is a full pass from position 0;
* a call that sees one position is a cached generation step (the newest token).

``positions=None`` steers every position except 0 (BOS, which the course's SAEs never
train on, as in ``labhelpers.splice``), and every generated token. Chosen ``positions``
are absolute positions in the prompt (no left padding): they are steered in the full
pass only; the cache keeps their steered keys and values for the tokens generated after.

(The rule is exact when the cache is. In transformer-lens 3.9.0 the bridge's cached steps
are not: a new token attends to itself alone. ``generate(..., use_past_kv_cache=False)``
recomputes every pass in full and matches ``model(tokens)``; the tests compare with it.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from labhelpers import models, plotting, splice

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from transformer_lens.model_bridge import TransformerBridge

    from labhelpers.sae import SAE

Hook = Callable[..., torch.Tensor]
Positions = slice | Sequence[int] | None
Metric = Callable[["TransformerBridge"], float]

# Row keys every sweep writes; control metrics take the names the caller gives them.
RESERVED_KEYS = ("alpha", "target", "kl", "generations")


def steering_hook(direction: torch.Tensor, alpha: float, positions: Positions = None) -> Hook:
    """A forward hook returning ``act + alpha * direction`` at the chosen positions.

    ``direction``: ``[d]``, where ``act`` is ``[batch, pos, d]``. ``positions``: None (all
    but position 0, and every generated token) or absolute prompt positions, a slice or
    a list of ints (see the module docstring for how this meets the KV cache).
    """
    _check_positions(positions)
    if direction.ndim != 1:
        raise ValueError(f"direction must be one vector [d], got shape {tuple(direction.shape)}")
    direction = direction.detach()  # steering is inference: no gradient into W_dec

    def hook(act: torch.Tensor, hook: object = None) -> torch.Tensor:
        if act.shape[-1] != direction.shape[0]:
            raise ValueError(
                f"the activations have width {act.shape[-1]}, the steering direction "
                f"{direction.shape[0]}: take the direction from an SAE trained at this hook"
            )
        if act.shape[1] == 1:  # a cached generation step: the newest token alone
            where = slice(None) if positions is None else slice(0, 0)
        else:
            where = _full_pass_positions(positions)
        out = act.clone()
        out[:, where] += alpha * direction.to(act.device, act.dtype)
        return out

    return hook


def _full_pass_positions(positions: Positions) -> slice | Sequence[int]:
    """Where a full forward pass is steered: every position but 0 (BOS), or those asked for."""
    return slice(1, None) if positions is None else positions


def _check_positions(positions: Positions) -> None:
    """Refuse negative positions: without a KV cache the sequence grows, so they would move."""
    if isinstance(positions, slice):
        ends = [positions.start, positions.stop]
    else:
        ends = list(positions or [])
    if any(end is not None and end < 0 for end in ends):
        raise ValueError(
            f"positions must be absolute (non-negative) prompt positions, got {positions}"
        )


@contextlib.contextmanager
def steered(
    model: TransformerBridge,
    hook_name: str,
    direction: torch.Tensor,
    alpha: float,
    positions: Positions = None,
) -> Iterator[TransformerBridge]:
    """Steer every forward pass inside the block (``model(...)``, ``generate``, ...).

    The hook is removed on exit, also when the block raises.
    """
    models.check_hook_name(model, hook_name)
    hook = steering_hook(direction, alpha, positions)
    with model.hooks(fwd_hooks=[(hook_name, hook)]):
        yield model


def random_control(direction: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A random direction with the same shape and norm as ``direction``, the same for the same ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(direction.shape, generator=gen, dtype=torch.float64)
    noise = noise * (direction.double().norm() / noise.norm())
    return noise.to(direction.device, direction.dtype)


def equal_norm(direction: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``other`` rescaled to the norm of ``direction`` (an unrelated feature as a control)."""
    return other * (direction.norm() / other.norm())


def refusal_rate(
    model: TransformerBridge,
    prompts: Sequence[Any],
    is_refusal: Callable[[str], bool],
    max_new_tokens: int = models.REFUSAL_MAX_NEW_TOKENS,
) -> float:
    """Share of ``prompts`` (``corpus.ChatPrompt``) whose greedy completion ``is_refusal`` flags."""
    return sum(models.refusals(model, prompts, is_refusal, max_new_tokens)) / len(prompts)


@torch.no_grad()
def logit_difference(
    model: TransformerBridge, prompts: Sequence[str], good: int | str, bad: int | str
) -> float:
    """Mean over ``prompts`` of logit(good) - logit(bad) for the next token.

    ``good`` and ``bad`` are token ids or strings of one token each (e.g. ``" I"``).
    """
    ids = [t if isinstance(t, int) else model.to_single_token(t) for t in (good, bad)]
    diffs = [model(model.to_tokens(p))[0, -1, ids] for p in prompts]
    return float(torch.stack([d[0] - d[1] for d in diffs]).mean())


def refusal_margin(logits: torch.Tensor, last: torch.Tensor, refusal_token: int) -> torch.Tensor:
    """``[batch]``: logit of ``refusal_token`` minus the best other token's, at each row's ``last`` position.

    logits: ``[batch, pos, d_vocab]``; last: ``[batch]`` (right padding: see
    ``circuits.tokenize_prompts``). Positive where greedy decoding starts to refuse.
    Unlike a refusal rate it is smooth in alpha and costs one forward pass.
    """
    at = logits[torch.arange(len(last)), last.to(logits.device)].float()  # [batch, d_vocab]
    refusal = at[:, refusal_token]
    others = at.clone()
    others[:, refusal_token] = -torch.inf
    return refusal - others.max(-1).values


@torch.no_grad()
def greedy_refusals(
    model: TransformerBridge,
    prompts: Sequence[str],
    refusal: str,
    max_new_tokens: int = models.REFUSAL_MAX_NEW_TOKENS,
) -> list[bool]:
    """For each prompt, whether its greedy completion starts with ``refusal`` (as ``corpus.is_refusal``).

    The same verdicts as ``is_refusal(greedy_completion(model, prompt, max_new_tokens))``,
    for a fraction of the cost. One forward pass reads the refusal sentence after every
    prompt at once (teacher forcing): greedy decoding follows the sentence exactly as far
    as each of its tokens is the argmax, so a row whose argmaxes all agree refuses, and a
    row that leaves the sentence is usually decided by the token it leaves with. The few
    rows still undecided then decode token by token. Every pass is a full pass (no KV
    cache), so steering hooks apply as in ``models.greedy_completion``.
    """
    sentence = model.to_tokens(" " + refusal, prepend_bos=False)[0].tolist()[:max_new_tokens]
    guesses = _greedy_along(model, prompts, [sentence] * len(prompts))
    new = [
        next(
            ([*sentence[:k], g] for k, (g, s) in enumerate(zip(guess, sentence)) if g != s),
            sentence,
        )
        for guess in guesses
    ]
    verdicts = [_refusal_verdict(model, tokens, refusal, max_new_tokens) for tokens in new]
    while any(v is None for v in verdicts):  # rare: off the sentence but still a prefix of its text
        rows = [i for i, v in enumerate(verdicts) if v is None]
        nexts = _greedy_along(model, [prompts[i] for i in rows], [new[i] for i in rows])
        for i, guess in zip(rows, nexts):
            new[i] = [*new[i], guess[-1]]
            verdicts[i] = _refusal_verdict(model, new[i], refusal, max_new_tokens)
    return [bool(v) for v in verdicts]


def _greedy_along(
    model: TransformerBridge, prompts: Sequence[str], continuations: Sequence[list[int]]
) -> list[list[int]]:
    """One right-padded pass over each prompt followed by its continuation; for each row the
    argmax next token after the prompt and after each continuation token (``len + 1`` ids)."""
    rows = [model.to_tokens(p)[0].cpu().tolist() + list(c) for p, c in zip(prompts, continuations)]
    eos = model.tokenizer.eos_token_id
    tokens = torch.full((len(rows), max(map(len, rows))), eos, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row)
    argmax = model(tokens.to(model.cfg.device)).argmax(-1).cpu()  # [batch, pos]
    return [
        argmax[i, len(row) - len(c) - 1 : len(row)].tolist()
        for i, (row, c) in enumerate(zip(rows, continuations))
    ]


def _refusal_verdict(
    model: TransformerBridge, new_tokens: list[int], refusal: str, max_new_tokens: int
) -> bool | None:
    """True / False once ``new_tokens`` decide whether the completion starts with ``refusal``;
    None while they could still become it (within ``max_new_tokens``)."""
    eos = model.tokenizer.eos_token_id
    new_tokens = new_tokens[:max_new_tokens]
    if eos in new_tokens:  # greedy_completion stops at end-of-text
        new_tokens = new_tokens[: new_tokens.index(eos)]
        done = True
    else:
        done = len(new_tokens) == max_new_tokens
    text = model.tokenizer.decode(new_tokens, skip_special_tokens=True).lstrip()
    if text.startswith(refusal):
        return True
    if done or not refusal.startswith(text):
        return False
    return None


@torch.no_grad()
def contrast_features(sae: SAE, acts: torch.Tensor, baseline_acts: torch.Tensor) -> torch.Tensor:
    """``[d_sae]``: each feature's mean activation on ``acts`` minus on ``baseline_acts``.

    acts: ``[n, d_in]`` where the concept is present (tokens of credential requests);
    baseline_acts: ``[m, d_in]`` where it is not (plain requests). The features that fire
    more with the concept are the *candidates*: a correlation, to be tested by intervening.
    """
    dtype = sae.W_enc.dtype
    return sae.encode(acts.to(dtype)).mean(0) - sae.encode(baseline_acts.to(dtype)).mean(0)


@torch.no_grad()
def steering_effects(
    model: TransformerBridge,
    hook_name: str,
    directions: torch.Tensor,
    alpha: float,
    tokens: torch.Tensor,
    metric: Callable[[torch.Tensor], torch.Tensor],
    positions: Positions = None,
) -> torch.Tensor:
    """``[n_directions]``: ``metric(steered logits) - metric(clean logits)`` for each row of ``directions``.

    directions: ``[n_directions, d]``, each steered alone with the same ``alpha``;
    ``metric(logits) -> scalar`` (e.g. the mean ``refusal_margin``). One pass per direction.
    """
    tokens = tokens.to(model.cfg.device)
    clean = float(metric(model(tokens)))
    effects = []
    for direction in directions:
        hook = steering_hook(direction, alpha, positions)
        effects.append(float(metric(splice.run_with_hooks(model, tokens, [(hook_name, hook)]))))
    return torch.tensor(effects) - clean


def steering_gradient(
    model: TransformerBridge,
    hook_name: str,
    tokens: torch.Tensor,
    metric: Callable[[torch.Tensor], torch.Tensor],
    positions: Positions = None,
) -> torch.Tensor:
    """``[d]``: the gradient of ``metric(logits)`` in the vector ``v`` added at ``hook_name``, at v = 0.

    ``v`` is added where ``steering_hook`` would add it (``positions``), so for a small
    ``alpha`` steering along ``u`` changes the metric by about ``alpha * gradient @ u``: the
    first-order estimate that attribution patching (``circuits``) also uses. A direction's
    cosine with the gradient then says how much of its push goes where the metric is
    sensitive, for any direction, without steering along it. tokens: ``[batch, pos]``.
    """
    _check_positions(positions)
    added: list[torch.Tensor] = []  # v, made at the width of the activations it meets

    def hook(act: torch.Tensor, hook: object = None) -> torch.Tensor:
        if not added:
            added.append(torch.zeros(act.shape[-1], device=act.device, requires_grad=True))
        where = _full_pass_positions(positions)
        out = act.clone()
        out[:, where] = out[:, where] + added[0].to(act.dtype)
        return out

    with torch.enable_grad():  # notebooks steer under no_grad; this one pass needs a graph
        logits = splice.run_with_hooks(model, tokens, [(hook_name, hook)])
        (gradient,) = torch.autograd.grad(metric(logits), added[0])
    return gradient.detach()


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation: Pearson correlation of the ranks, ties given their mean rank.

    NaN when either input is constant (a flat curve has no trend to correlate).
    """
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: Sequence[float]) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=float)
    for value in np.unique(values):  # ties share the mean of their ranks
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def sweep(
    model: TransformerBridge,
    hook_name: str,
    direction: torch.Tensor,
    alphas: Sequence[float],
    target_fn: Metric,
    control_fns: Mapping[str, Metric] | None = None,
    side_effect_tokens: torch.Tensor | None = None,
    control_directions: Mapping[str, torch.Tensor] | None = None,
    generation_prompts: Sequence[str] = (),
    positions: Positions = None,
    max_new_tokens: int = 20,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Steer with ``alpha * direction`` for each alpha and measure; one row (a dict) per alpha.

    A row holds ``alpha``; ``target`` (``target_fn(model)``, steered); one entry per
    ``control_fns`` name (steered along ``direction``); one entry per
    ``control_directions`` name (``target_fn`` steered along that direction, rescaled to
    the norm of ``direction``); ``kl``, the mean KL(unsteered || steered) on
    ``side_effect_tokens`` ``[batch, pos]``, steered along ``direction`` only, not the
    control directions (None without them); and ``generations``,
    the steered greedy completions of ``generation_prompts``. ``progress`` shows a bar over
    the alphas.
    """
    control_fns = dict(control_fns or {})
    controls = {k: equal_norm(direction, d) for k, d in (control_directions or {}).items()}
    names = [*control_fns, *controls]
    clash = (set(names) & set(RESERVED_KEYS)) | (set(control_fns) & set(controls))
    if clash:
        raise ValueError(f"control names {sorted(clash)} clash with each other or the sweep's keys")
    clean = None
    if side_effect_tokens is not None:
        clean = splice.logits_with(model, side_effect_tokens, hook_name, None)

    rows = []
    for alpha in tqdm(
        alphas, desc="steering sweep", unit="alpha", leave=False, disable=not progress
    ):
        row: dict[str, Any] = {"alpha": float(alpha)}
        with steered(model, hook_name, direction, alpha, positions):
            row["target"] = float(target_fn(model))
            for name, fn in control_fns.items():
                row[name] = float(fn(model))
            row["generations"] = [
                models.greedy_completion(model, p, max_new_tokens) for p in generation_prompts
            ]
        for name, control in controls.items():
            with steered(model, hook_name, control, alpha, positions):
                row[name] = float(target_fn(model))
        row["kl"] = None
        if clean is not None:
            hook = steering_hook(direction, alpha, positions)
            other = splice.logits_with(model, side_effect_tokens, hook_name, hook)
            row["kl"] = float(splice.kl_divergence(clean, other))
        rows.append(row)
    return rows


def _metric_keys(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The numeric columns present in the rows, in a fixed order: target, controls, kl."""
    controls = [k for k in rows[0] if k not in RESERVED_KEYS]
    keys = ["target", *controls, "kl"]
    return [k for k in keys if rows[0].get(k) is not None]


def format_table(rows: Sequence[Mapping[str, Any]], digits: int = 3) -> str:
    """The sweep's numbers as a fixed-width text table, one line per alpha."""
    keys = ["alpha", *_metric_keys(rows)]
    width = max(10, *(len(k) + 2 for k in keys))
    lines = ["".join(k.rjust(width) for k in keys)]
    for row in rows:
        lines.append("".join(f"{row[k]:{width}.{digits}f}" for k in keys))
    return "\n".join(lines)


def plot_sweep(
    rows: Sequence[Mapping[str, Any]],
    ax: Axes | None = None,
    title: str = "",
    ylabel: str = "metric",
) -> Axes:
    """Target and control metrics against alpha (KL, on another scale, on a right-hand axis).

    ``ylabel`` names what the sweep measured ("refusal rate"); the default says only "metric".
    """
    alphas = [row["alpha"] for row in rows]
    keys = [k for k in _metric_keys(rows) if k != "kl"]
    series = {"target (along d)" if k == "target" else k: [row[k] for row in rows] for k in keys}
    ax = plotting.sweep(alphas, series, "alpha", ylabel, ax=ax, title=title)
    handles, names = ax.get_legend_handles_labels()
    if rows[0].get("kl") is not None:
        right = ax.twinx()
        (kl_line,) = right.plot(alphas, [row["kl"] for row in rows], "k--")
        right.set_ylabel("KL(unsteered || steered), dashed")
        handles, names = [*handles, kl_line], [*names, "KL on unrelated text"]
    # one legend under the axes, so it never hides a curve
    ax.legend(
        handles, names, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, frameon=False
    )
    return ax


def rise_and_fall(rows: Sequence[Mapping[str, Any]], name: str) -> tuple[float, float]:
    """How far column ``name`` of a sweep goes above and below its value at alpha 0.

    Returns ``(largest rise, largest fall)``, both >= 0. A control that only ever lowers a
    rate and one that raises it are different findings, so the two are kept apart.
    """
    at_zero = [row[name] for row in rows if row["alpha"] == 0.0]
    if not at_zero:
        raise ValueError("the sweep has no alpha 0 row to measure changes from")
    values = [row[name] for row in rows]
    return max(values) - at_zero[0], at_zero[0] - min(values)


def plot_draws(
    rows: Sequence[Mapping[str, Any]],
    groups: Mapping[str, Sequence[str]],
    ax: Axes | None = None,
    title: str = "",
    ylabel: str = "metric",
) -> Axes:
    """The target curve over many control curves: one thin line per draw, a colour per group.

    ``groups`` maps a label ("random directions") to the sweep columns of its draws;
    ``ylabel`` names what the sweep measured, as in ``plot_sweep``.
    """
    alphas = [row["alpha"] for row in rows]
    ax = plotting.axes(ax, (6, 4))
    for i, (label, names) in enumerate(groups.items()):
        for j, name in enumerate(names):
            label_once = label if j == 0 else None
            color = plotting.COLORS[i + 1]
            ax.plot(alphas, [row[name] for row in rows], color=color, lw=1, label=label_once)
    ax.plot(alphas, [row["target"] for row in rows], "k-o", lw=2.5, label="target (along d)")
    ax.set_xlabel("alpha")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(frameon=False, loc="upper left")
    return ax
