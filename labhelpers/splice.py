"""Splice an SAE into a model's forward pass.

At the SAE's hook point the activation ``x`` is replaced by the SAE's reconstruction
``x_hat = decode(encode(x))``. Two switches make this the tool of every later notebook:

* ``edit``: change the latents before decoding (zero a feature to ablate it, add to one
  to steer it);
* ``keep_error``: add back the SAE's error ``x - x_hat``, so that the model sees its clean
  activation *except* for the edit. With no edit the model's output is then unchanged,
  and any change is due to the edited features alone (Marks et al., 2024).

Position 0 (BOS) is passed through untouched: the SAEs in this course never train on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from labhelpers import models

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from labhelpers.sae import SAE

Hook = Callable[..., torch.Tensor]
LatentEdit = Callable[[torch.Tensor], torch.Tensor]
# (what the SAE encodes, the activation it replaces) -> the new activation
Replacement = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _is_transcoder(sae: SAE) -> bool:
    return getattr(sae, "architecture", None) == "transcoder"


def sae_hook(sae: SAE, edit: LatentEdit | None = None, keep_error: bool = False) -> Hook:
    """A forward hook that puts ``sae``'s (optionally edited) reconstruction in place of the activation.

    ``edit(z) -> z'`` receives the latents ``[batch, pos, d_sae]`` of positions 1 onwards.
    A transcoder reads another hook than the one it replaces: use ``transcoder_hooks``.
    """
    if _is_transcoder(sae):
        raise ValueError(
            "a transcoder reads the MLP's input and replaces its output, so one hook cannot "
            "splice it in: use splice.transcoder_hooks(transcoder, *transcoder.mlp_hooks(layer))"
        )

    def hook(act: torch.Tensor, hook: object = None) -> torch.Tensor:
        x = act[:, 1:]
        z = sae.encode(x.to(sae.W_enc.dtype))
        x_hat = sae.decode(z)
        new = sae.decode(edit(z.clone())) if edit is not None else x_hat
        if keep_error:
            new = new + (x - x_hat)
        out = act.clone()
        out[:, 1:] = new.to(act.dtype)
        return out

    return hook


def reads_from(hook_name: str, sae: SAE) -> str:
    """The hook whose activation ``sae``, spliced in at ``hook_name``, encodes.

    An SAE encodes the activation it replaces, so this is ``hook_name`` itself. A
    transcoder replaces an MLP's output, ``blocks.L.hook_mlp_out``, from the MLP's input,
    ``blocks.L.mlp.hook_in``.
    """
    if not _is_transcoder(sae):
        return hook_name
    if not hook_name.endswith(".hook_mlp_out"):
        raise ValueError(
            f"a transcoder replaces an MLP's output (blocks.L.hook_mlp_out), not {hook_name!r}"
        )
    return hook_name.removesuffix("hook_mlp_out") + "mlp.hook_in"


def replacing_hooks(
    hook_name: str, sae: SAE, replace: Replacement, in_hook: str | None = None
) -> list[tuple[str, Hook]]:
    """Forward hooks that set the activation at ``hook_name`` to ``replace(x, act)``.

    ``x`` is what ``sae`` encodes (``reads_from``, or ``in_hook`` when given) and ``act``
    the activation being replaced, both ``[batch, pos - 1, d]`` in the SAE's dtype:
    position 0 (BOS) passes through. For an SAE the two are the same tensor; for a
    transcoder a first hook records the MLP's input during the same forward pass.
    """
    in_hook = reads_from(hook_name, sae) if in_hook is None else in_hook
    seen: dict[str, torch.Tensor] = {}

    def record(act: torch.Tensor, hook: object = None) -> torch.Tensor:
        seen["x"] = act[:, 1:].to(sae.W_enc.dtype)
        return act

    def hook(act: torch.Tensor, hook: object = None) -> torch.Tensor:
        y = act[:, 1:].to(sae.W_enc.dtype)
        x = y if in_hook == hook_name else seen.pop("x")
        return torch.cat([act[:, :1], replace(x, y).to(act.dtype)], dim=1)

    if in_hook == hook_name:
        return [(hook_name, hook)]
    return [(in_hook, record), (hook_name, hook)]


def transcoder_hooks(transcoder: SAE, in_hook: str, out_hook: str) -> list[tuple[str, Hook]]:
    """Forward hooks that put a transcoder in place of an MLP, for ``run_with_hooks``.

    The first records the MLP's input at ``in_hook``; the second replaces the MLP's output
    at ``out_hook`` with the transcoder's prediction from that input. The MLP still runs,
    but nothing downstream sees what it computed.
    """

    def predict(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return transcoder.decode(transcoder.encode(x))

    return replacing_hooks(out_hook, transcoder, predict, in_hook)


def hold_hooks(cache, names: list[str]) -> list[tuple[str, Hook]]:
    """Forward hooks that hold each named activation at its value in ``cache`` (a clean
    ``run_with_cache``), e.g. attention patterns or LayerNorm scales, so that it cannot
    respond to an edit upstream. Copies of the cached row fill a larger batch."""
    return [(name, lambda act, hook=None, name=name: cache[name].expand_as(act)) for name in names]


def zero_hook(act: torch.Tensor, hook: object = None) -> torch.Tensor:
    """Zero-ablation of the whole activation (positions 1 onwards): the usual floor for CE-loss recovered."""
    out = act.clone()
    out[:, 1:] = 0.0
    return out


def run_with_hooks(
    model: TransformerBridge, tokens: torch.Tensor, hooks: Sequence[tuple[str, Hook]]
) -> torch.Tensor:
    """``model.run_with_hooks``, except that a hook name the model lacks is an error.

    The bridge skips hooks whose name it does not know, so a misspelt name would return
    the clean logits and every ablation or steering effect would read as zero. Every
    hooked pass in ``labhelpers`` goes through here. Returns ``[batch, pos, d_vocab]``.
    """
    known = model.hook_dict if hooks else {}
    for name, _ in hooks:
        if name not in known:
            models.check_hook_name(model, name)  # raises, naming the close matches
    return model.run_with_hooks(tokens.to(model.cfg.device), fwd_hooks=list(hooks))


@torch.no_grad()
def logits_with(
    model: TransformerBridge, tokens: torch.Tensor, hook_name: str, hook: Hook | None
) -> torch.Tensor:
    """``[batch, pos, d_vocab]`` logits with ``hook`` at ``hook_name`` (None: the clean model)."""
    if hook is None:
        return model(tokens.to(model.cfg.device))
    return run_with_hooks(model, tokens, [(hook_name, hook)])


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting ``tokens[:, 1:]`` from ``logits[:, :-1]``."""
    log_probs = logits[:, :-1].float().log_softmax(-1)
    return -log_probs.gather(-1, tokens[:, 1:, None].to(log_probs.device)).mean()


def kl_divergence(clean_logits: torch.Tensor, other_logits: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of KL(clean || other) between next-token distributions."""
    clean = clean_logits.float().log_softmax(-1)
    other = other_logits.float().log_softmax(-1)
    return (clean.exp() * (clean - other)).sum(-1).mean()
