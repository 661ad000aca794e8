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

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from labhelpers.sae import SAE

Hook = Callable[..., torch.Tensor]
LatentEdit = Callable[[torch.Tensor], torch.Tensor]


def sae_hook(sae: SAE, edit: LatentEdit | None = None, keep_error: bool = False) -> Hook:
    """A forward hook that puts ``sae``'s (optionally edited) reconstruction in place of the activation.

    ``edit(z) -> z'`` receives the latents ``[batch, pos, d_sae]`` of positions 1 onwards.
    """

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


def transcoder_hooks(transcoder: SAE, in_hook: str, out_hook: str) -> list[tuple[str, Hook]]:
    """Forward hooks that put a transcoder in place of an MLP, for ``run_with_hooks``.

    The first records the MLP's input at ``in_hook``; the second replaces the MLP's output
    at ``out_hook`` with the transcoder's prediction from that input. The MLP still runs,
    but nothing downstream sees what it computed.
    """
    seen: dict[str, torch.Tensor] = {}

    def record(act: torch.Tensor, hook: object = None) -> torch.Tensor:
        seen["x"] = act[:, 1:]
        return act

    def replace(act: torch.Tensor, hook: object = None) -> torch.Tensor:
        x = seen.pop("x").to(transcoder.W_enc.dtype)
        out = act.clone()
        out[:, 1:] = transcoder.decode(transcoder.encode(x)).to(act.dtype)
        return out

    return [(in_hook, record), (out_hook, replace)]


def zero_hook(act: torch.Tensor, hook: object = None) -> torch.Tensor:
    """Zero-ablation of the whole activation (positions 1 onwards): the usual floor for CE-loss recovered."""
    out = act.clone()
    out[:, 1:] = 0.0
    return out


@torch.no_grad()
def logits_with(
    model: TransformerBridge, tokens: torch.Tensor, hook_name: str, hook: Hook | None
) -> torch.Tensor:
    """``[batch, pos, d_vocab]`` logits with ``hook`` at ``hook_name`` (None: the clean model)."""
    tokens = tokens.to(model.cfg.device)
    if hook is None:
        return model(tokens)
    return model.run_with_hooks(tokens, fwd_hooks=[(hook_name, hook)])


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting ``tokens[:, 1:]`` from ``logits[:, :-1]``."""
    log_probs = logits[:, :-1].float().log_softmax(-1)
    return -log_probs.gather(-1, tokens[:, 1:, None].to(log_probs.device)).mean()


def kl_divergence(clean_logits: torch.Tensor, other_logits: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of KL(clean || other) between next-token distributions."""
    clean = clean_logits.float().log_softmax(-1)
    other = other_logits.float().log_softmax(-1)
    return (clean.exp() * (clean - other)).sum(-1).mean()
