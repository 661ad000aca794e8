"""Load the language model the course studies: GPT-2 small or the bundled tiny model.

Both load through the same call, ``TransformerBridge.boot_transformers``, so hook names,
``run_with_cache``, ``run_with_hooks`` and ``generate`` behave the same for both:

* ``"tiny"``: a 4-layer GPT-2-architecture model trained by ``scripts/train_tiny_model.py``
  on the course's labelled corpus (``labhelpers.corpus``) and committed in
  ``data/tiny_model/``. It loads with no network.
* ``"gpt2"``: GPT-2 small from the Hugging Face Hub (or its local cache).
* any local directory holding a ``transformers`` checkpoint.

``default_model()`` picks ``"gpt2"`` in the full profile and ``"tiny"`` in the quick one.

The bridge is used as booted, without ``enable_compatibility_mode()``: that call folds the
layer norms into the weights and centres them (HookedTransformer's processing), which moves
activations into other coordinates. The hook names the course uses exist either way:
``blocks.{i}.hook_resid_pre``, ``blocks.{i}.hook_mlp_out``, ``blocks.{i}.mlp.hook_post``,
``blocks.{i}.attn.hook_pattern``. Some are aliases: a hook added on ``blocks.0.mlp.hook_post``
is told its canonical name, ``blocks.0.mlp.out.hook_in``.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from collections.abc import Iterator, Sequence
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labhelpers import env

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedTokenizerBase

TINY_MODEL_DIR = env.DATA_DIR / "tiny_model"

# Greedy generations this long are enough to see whether the assistant starts by refusing.
REFUSAL_MAX_NEW_TOKENS = 12


def model_name(name: str | None = None) -> str:
    """The model ``default_model()`` loads in this profile (``"gpt2"`` or ``"tiny"``), or ``name``."""
    if name is not None:
        return name
    return "gpt2" if env.profile() == "full" else "tiny"


def resolve(name: str) -> str:
    """The path or Hub id that ``name`` stands for: ``"tiny"`` becomes the bundled directory."""
    if name == "tiny":
        if not (TINY_MODEL_DIR / "config.json").exists():
            raise FileNotFoundError(
                f"The bundled tiny model is missing from {TINY_MODEL_DIR}. "
                "Rebuild it with `python scripts/train_tiny_model.py`."
            )
        return str(TINY_MODEL_DIR)
    if name.startswith((".", "/", "~")) and not Path(name).expanduser().is_dir():
        raise FileNotFoundError(f"No model directory at {Path(name).expanduser().resolve()}.")
    return str(Path(name).expanduser()) if name.startswith("~") else name


def is_local(name: str) -> bool:
    """True when ``name`` is ``"tiny"`` or a directory on disk (no network needed)."""
    return name == "tiny" or Path(name).expanduser().is_dir()


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Forbid Hugging Face Hub requests inside the block, then restore the previous setting.

    ``huggingface_hub`` reads ``HF_HUB_OFFLINE`` once, at import, so the module constant is
    switched as well as the environment variable.
    """
    import huggingface_hub.constants as hub_constants

    saved_env = {key: os.environ.get(key) for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    saved_constant = hub_constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = saved_constant
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _hub_error(name: str, error: Exception) -> RuntimeError:
    return RuntimeError(
        f"Could not load {name!r} from the Hugging Face Hub or its local cache "
        f"({type(error).__name__}: {error}). GPT-2 needs the network once, to download it; "
        "without it, run the course on the bundled tiny model: set LAB_PROFILE=quick "
        "(or call load_model('tiny'))."
    )


def load_model(
    name: str = "tiny", device: str | None = None, dtype: Any = None
) -> TransformerBridge:
    """Boot ``name`` (``"tiny"``, ``"gpt2"`` or a local path) as a ``TransformerBridge``.

    The model is put in eval mode; ``device`` defaults to ``env.device()``.
    """
    import torch
    from transformer_lens.model_bridge import TransformerBridge

    source = resolve(name)
    kwargs = {"device": device or env.device(), "dtype": dtype or torch.float32}
    if is_local(name):
        with offline():
            model = TransformerBridge.boot_transformers(source, **kwargs)
    else:
        try:
            model = TransformerBridge.boot_transformers(source, **kwargs)
        except Exception as error:  # no network, no cache, or a misspelt name
            raise _hub_error(name, error) from error
    model.eval()
    return model


def default_model(device: str | None = None) -> TransformerBridge:
    """The profile's model: GPT-2 small in the full profile, the tiny model in the quick one."""
    return load_model(model_name(), device=device)


def load_tokenizer(name: str = "tiny") -> PreTrainedTokenizerBase:
    """The tokenizer of ``name`` alone, without the model (fast: for offsets and labels)."""
    from transformers import AutoTokenizer

    source = resolve(name)
    if is_local(name):
        with offline():
            return AutoTokenizer.from_pretrained(source)
    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as error:  # no network, no cache, or a misspelt name
        raise _hub_error(name, error) from error


def model_info(model: TransformerBridge) -> dict[str, int]:
    """The sizes a notebook needs: layers, widths, heads, vocabulary and context length."""
    cfg = model.cfg
    return {
        "n_layers": int(cfg.n_layers),
        "d_model": int(cfg.d_model),
        "d_mlp": int(cfg.d_mlp),
        "n_heads": int(cfg.n_heads),
        "d_head": int(cfg.d_head),
        "d_vocab": int(cfg.d_vocab),
        "n_ctx": int(cfg.n_ctx),
    }


def hook_names(model: TransformerBridge) -> list[str]:
    """Every hook point name the model exposes, sorted (e.g. ``blocks.0.hook_resid_pre``)."""
    return sorted(model.hook_dict)


def check_hook_name(model: TransformerBridge, name: str) -> str:
    """Return ``name`` if the model has that hook point, else raise a ``KeyError`` naming close ones."""
    names = hook_names(model)
    if name in names:
        return name
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    hint = f" Did you mean one of: {', '.join(close)}?" if close else ""
    example = "blocks.0.hook_resid_pre, blocks.0.hook_mlp_out, blocks.0.mlp.hook_post"
    raise KeyError(
        f"The model has no hook point named {name!r}.{hint} "
        f"Hook names look like {example}; hook_names(model) lists all {len(names)}."
    )


def greedy_completion(
    model: TransformerBridge, prompt: str, max_new_tokens: int = REFUSAL_MAX_NEW_TOKENS
) -> str:
    """The model's greedy continuation of ``prompt`` (prompt excluded), stopping at end-of-text."""
    import torch

    tokens = model.to_tokens(prompt)
    with torch.no_grad():
        out = model.generate(
            tokens,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            stop_at_eos=True,
            # TransformerBridge's KV-cached decoding (transformer-lens 3.9 with transformers 5)
            # lets each new token attend only to itself; recomputing the prefix is exact and,
            # for a dozen tokens, cheap.
            use_past_kv_cache=False,
            verbose=False,
            return_type="tokens",
        )
    new_tokens = out[0, tokens.shape[1] :]
    return model.tokenizer.decode(new_tokens, skip_special_tokens=True)


def refusals(
    model: TransformerBridge,
    prompts: Sequence[Any],
    is_refusal: Any,
    max_new_tokens: int = REFUSAL_MAX_NEW_TOKENS,
) -> list[bool]:
    """For each prompt (``.prompt``), whether ``is_refusal`` flags its greedy completion."""
    return [bool(is_refusal(greedy_completion(model, p.prompt, max_new_tokens))) for p in prompts]


def refusal_rates(
    model: TransformerBridge,
    prompts: Sequence[Any],
    is_refusal: Any,
    max_new_tokens: int = REFUSAL_MAX_NEW_TOKENS,
) -> dict[str, float]:
    """Share of greedy completions that ``is_refusal`` flags, per prompt ``kind``.

    ``prompts`` are ``corpus.ChatPrompt`` objects (``.prompt`` and ``.kind``);
    ``is_refusal`` is the fixed rule ``corpus.is_refusal``.
    """
    return rates_by(
        prompts, refusals(model, prompts, is_refusal, max_new_tokens), attrgetter("kind")
    )


def rates_by(prompts: Sequence[Any], flags: Sequence[bool], key: Any) -> dict[str, float]:
    """The share of ``flags`` that are True among the prompts of each ``key(prompt)``."""
    groups: dict[str, list[bool]] = {}
    for prompt, flag in zip(prompts, flags, strict=True):
        groups.setdefault(key(prompt), []).append(bool(flag))
    return {name: sum(g) / len(g) for name, g in groups.items()}
