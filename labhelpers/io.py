"""Save and load SAEs in SAELens's layout, so that SAELens can load ours (and we theirs).

A saved SAE is a folder with two files:

* ``cfg.json``: ``architecture`` (SAELens's name: standard, topk, jumprelu, gated),
  ``d_in``, ``d_sae``, ``dtype``, ``device``, ``apply_b_dec_to_input``,
  ``normalize_activations`` ("none": any input scaling is folded into the weights before
  saving), ``reshape_activations``, ``metadata`` (hook name, model name, and our own
  config under ``metadata["labhelpers"]``) and architecture fields such as ``k``;
* ``sae_weights.safetensors``: ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``,
  ``W_dec [d_sae, d_in]``, ``b_dec [d_in]``, plus ``threshold [d_sae]`` for JumpReLU
  (and BatchTopK, which SAELens stores as a JumpReLU), or ``b_gate``, ``r_mag``, ``b_mag``
  for Gated (whose gate bias is our ``b_enc``).

A transcoder (``labhelpers.transcoder``) is saved the same way, with the pair of hooks it
reads and writes (``metadata["hook_name"]`` and ``metadata["hook_name_out"]``) and
``d_out``. SAELens's own ``transcoder`` is a ReLU transcoder, so ours, a TopK one, is
written as ``topk_transcoder``: a name SAELens refuses instead of misreading.

Public SAEs (the full profile's ``gpt2-small-res-jb``) come from SAELens's directory
through :func:`load_pretrained_sae`, which also fixes the one way their inputs differ
from the bridge's activations (see :class:`CentredInput`).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from labhelpers.sae import ARCHITECTURES, SAE, SAEConfig

__all__ = [
    "CFG_FILENAME",
    "WEIGHTS_FILENAME",
    "CentredInput",
    "SAEFormatError",
    "load_pretrained_sae",
    "load_sae",
    "save_sae",
    "trained_on_centred_stream",
]

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"
# The SAELens config-format version we write; versions before 6.0 use other key names.
SAELENS_FORMAT_VERSION = "6.0.0"

# Our short name -> SAELens's architecture name.
_SAELENS_NAME = {
    "relu": "standard",
    "topk": "topk",
    "matryoshka": "topk",  # nested losses only shape training; it encodes as TopK
    "batchtopk": "jumprelu",
    "jumprelu": "jumprelu",
    "gated": "gated",
    "transcoder": "topk_transcoder",
}


class SAEFormatError(ValueError):
    """A saved SAE whose config or tensors do not match what its architecture needs."""


def _architectures() -> dict[str, type[SAE]]:
    from labhelpers.transcoder import Transcoder  # imported here: it imports this module's users

    return {**ARCHITECTURES, "transcoder": Transcoder}


def _short_name(sae: SAE) -> str:
    for name, cls in _architectures().items():
        if type(sae) is cls:
            return name
    raise TypeError(
        f"save_sae writes the architectures of labhelpers.sae ({', '.join(ARCHITECTURES)}) "
        f"and transcoders; a {type(sae).__name__} is not one of them. "
        "Trainer.save_checkpoint saves any model it trains."
    )


def _state_for_saving(sae: SAE) -> dict[str, torch.Tensor]:
    tensors = {
        "W_enc": sae.W_enc.detach(),
        "b_enc": sae.b_enc.detach(),
        "W_dec": sae.W_dec.detach(),
        "b_dec": sae.b_dec.detach(),
        **sae.extra_tensors(),
    }
    if _short_name(sae) == "gated":
        tensors["b_gate"] = tensors.pop("b_enc")
    return {name: t.contiguous().clone() for name, t in tensors.items()}


def save_sae(
    sae: SAE,
    path: str | Path,
    *,
    hook_name: str | tuple[str, str] | None = None,
    model_name: str | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``cfg.json`` and ``sae_weights.safetensors`` under ``path``; return the folder.

    For a transcoder, ``hook_name`` is the pair (MLP input, MLP output), as
    ``transcoder.mlp_hooks`` gives it.
    """
    path = Path(path)
    name = _short_name(sae)
    hook_out = None
    if name == "transcoder":
        if not (isinstance(hook_name, tuple | list) and len(hook_name) == 2):
            raise ValueError(
                "save a transcoder with hook_name=(MLP input, MLP output), e.g. "
                f"transcoder.mlp_hooks(layer); got {hook_name!r}"
            )
        hook_name, hook_out = hook_name
    path.mkdir(parents=True, exist_ok=True)
    metadata: dict[str, Any] = {
        "sae_lens_version": SAELENS_FORMAT_VERSION,
        "sae_lens_training_version": None,
        "hook_name": hook_name,
        "model_name": model_name,
        **(extra_metadata or {}),
        "labhelpers": {"architecture": name, "config": sae.cfg.to_dict()},
    }
    cfg: dict[str, Any] = {
        "architecture": _SAELENS_NAME[name],
        "d_in": sae.cfg.d_in,
        "d_sae": sae.cfg.d_sae,
        "dtype": str(sae.W_enc.dtype).removeprefix("torch."),
        "device": "cpu",
        "apply_b_dec_to_input": sae.cfg.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": metadata,
    }
    if cfg["architecture"] in ("topk", "topk_transcoder"):  # SAELens's TopK kinds read k
        cfg["k"] = sae.cfg.k
        cfg["rescale_acts_by_decoder_norm"] = False
    if name == "transcoder":
        cfg["d_out"] = sae.cfg.d_in
        metadata["hook_name_out"] = hook_out
    tensors = {k: v.cpu() for k, v in _state_for_saving(sae).items()}
    save_file(tensors, str(path / WEIGHTS_FILENAME))
    (path / CFG_FILENAME).write_text(json.dumps(cfg, indent=2))
    return path


def _expected_shapes(name: str, d_in: int, d_sae: int) -> dict[str, tuple[int, ...]]:
    shapes = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    if name == "gated":
        shapes.update(b_gate=(d_sae,), r_mag=(d_sae,), b_mag=(d_sae,))
    else:
        shapes["b_enc"] = (d_sae,)
    if name in ("jumprelu", "batchtopk"):
        shapes["threshold"] = (d_sae,)
    return shapes


def _read_cfg(path: Path) -> dict[str, Any]:
    cfg_path = path / CFG_FILENAME
    if not path.is_dir():
        raise FileNotFoundError(f"No saved SAE at {path}: expected a folder with {CFG_FILENAME}.")
    if not cfg_path.exists():
        raise SAEFormatError(f"no {CFG_FILENAME} in {path}")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as error:
        raise SAEFormatError(f"{cfg_path} is not valid JSON ({error})") from error
    for key in ("architecture", "d_in", "d_sae"):
        if key not in cfg:
            raise SAEFormatError(f"{cfg_path}: missing required field {key!r}")
    if cfg.get("normalize_activations", "none") != "none":
        raise SAEFormatError(
            f"{cfg_path}: field 'normalize_activations' is {cfg['normalize_activations']!r}; "
            "only 'none' is supported (fold the scaling into the weights before saving)"
        )
    return cfg


def _our_name_and_config(cfg: dict[str, Any]) -> tuple[str, SAEConfig]:
    ours = (cfg.get("metadata") or {}).get("labhelpers")
    if ours:
        for key in ("architecture", "config"):
            if key not in ours:
                raise SAEFormatError(f"missing required field 'metadata.labhelpers.{key}'")
        name, fields = ours["architecture"], dict(ours["config"])
        if name not in _architectures():
            raise SAEFormatError(
                f"field 'metadata.labhelpers.architecture' is {name!r}; "
                f"supported: {sorted(_architectures())}"
            )
    else:  # an SAE written by SAELens itself
        by_saelens = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu", "gated": "gated"}
        if cfg["architecture"] not in by_saelens:
            raise SAEFormatError(
                f"field 'architecture' is {cfg['architecture']!r}; supported: {sorted(by_saelens)}"
            )
        name, fields = by_saelens[cfg["architecture"]], {}
        if name == "topk":
            if "k" not in cfg:
                raise SAEFormatError("missing required field 'k' for a topk SAE")
            if cfg.get("rescale_acts_by_decoder_norm", False):
                raise SAEFormatError("field 'rescale_acts_by_decoder_norm' must be false")
            fields["k"] = int(cfg["k"])
    # Unknown keys come from a newer labhelpers. Dropped with a warning rather than refused:
    # what the weights compute is fixed by the architecture (checked above) and the sizes
    # and k (read below); the other fields are training settings such as sparsity_coeff.
    unknown = sorted(set(fields) - {field.name for field in dataclass_fields(SAEConfig)})
    if unknown:
        warnings.warn(
            f"ignoring 'metadata.labhelpers.config' fields this version does not know: "
            f"{unknown} (the SAE was saved by a newer labhelpers?)",
            stacklevel=3,
        )
        fields = {key: value for key, value in fields.items() if key not in unknown}
    fields.update(
        d_in=int(cfg["d_in"]),
        d_sae=int(cfg["d_sae"]),
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
    )
    return name, SAEConfig(**fields)


def load_sae(path: str | Path, device: str | torch.device = "cpu") -> SAE:
    """Load an SAE saved by :func:`save_sae` (or by SAELens, for the shared architectures).

    Raises :class:`SAEFormatError` naming the file and the field when a key is missing, a
    tensor has the wrong shape or holds NaN, or a file is damaged.
    """
    path = Path(path)
    cfg = _read_cfg(path)
    name, sae_cfg = _our_name_and_config(cfg)
    weights_path = path / WEIGHTS_FILENAME
    if not weights_path.exists():
        raise SAEFormatError(f"no {WEIGHTS_FILENAME} in {path}")
    try:
        tensors = load_file(str(weights_path))
    except SafetensorError as error:
        raise SAEFormatError(f"{weights_path} is damaged and cannot be read ({error})") from error
    for key, shape in _expected_shapes(name, sae_cfg.d_in, sae_cfg.d_sae).items():
        if key not in tensors:
            raise SAEFormatError(f"{weights_path}: missing tensor {key!r} for a {name} SAE")
        if tuple(tensors[key].shape) != shape:
            raise SAEFormatError(
                f"{weights_path}: tensor {key!r} has shape {tuple(tensors[key].shape)}, "
                f"expected {shape} (d_in={sae_cfg.d_in}, d_sae={sae_cfg.d_sae})"
            )
        if not torch.isfinite(tensors[key]).all():
            raise SAEFormatError(f"{weights_path}: tensor {key!r} holds NaN or inf")
    sae = _architectures()[name](sae_cfg)
    if name == "gated":
        tensors["b_enc"] = tensors.pop("b_gate")
    with torch.no_grad():
        for key in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(sae, key).copy_(tensors[key])
        if name == "jumprelu":
            sae.log_threshold.copy_(tensors["threshold"].log())
        elif name == "batchtopk":
            threshold = tensors["threshold"]
            if not torch.all(threshold == threshold[0]):
                raise SAEFormatError("tensor 'threshold' of a batchtopk SAE must be one value")
            sae.threshold.copy_(threshold[0])
            # A saved threshold is a settled average, not a first estimate: with 0 updates
            # counted, the next training batch would replace it instead of nudging it by m.
            # After a million, the bias correction 1 - (1 - m)^n is 1 to float precision.
            sae.threshold_updates.fill_(1_000_000)
        elif name == "gated":
            sae.r_mag.copy_(tensors["r_mag"])
            sae.b_mag.copy_(tensors["b_mag"])
    return sae.to(device).eval()


class CentredInput(torch.nn.Module):
    """An SAE that subtracts each input vector's mean over ``d_in`` before reading it.

    HookedTransformer's default processing (``center_writing_weights``) makes every vector
    written to the residual stream mean-zero over ``d_model``, so SAEs trained on it never
    saw that mean; the bridge runs the model as published, whose residual stream keeps it.
    Layer norm subtracts the same mean before anything reads the stream, so the model's
    computation is identical in both: centring the input is all an SAE needs. ``decode``
    returns the centred reconstruction; spliced in, the mean goes to the error term.

    It stands in for the SAE wherever labhelpers uses one (metrics, features, splice,
    circuits, steering, widgets): the members below are the whole interface those use,
    written out rather than forwarded by ``__getattr__`` so that nothing reads the input
    uncentred by accident. To train or save the SAE, use ``.sae`` on centred activations.
    """

    def __init__(self, sae: torch.nn.Module):
        super().__init__()
        self.sae = sae

    @staticmethod
    def centre(x: torch.Tensor) -> torch.Tensor:  # [..., d_in], each vector's mean removed
        return x - x.mean(dim=-1, keepdim=True)

    # --- the wrapped SAE's sizes, name and weights, unchanged -------------------------------
    @property
    def cfg(self) -> Any:
        return self.sae.cfg

    @property
    def architecture(self) -> str:
        # Ours is a class attribute; SAELens's is a method of the config.
        return getattr(self.sae, "architecture", None) or self.sae.cfg.architecture()

    @property
    def W_enc(self) -> torch.Tensor:  # [d_in, d_sae]
        return self.sae.W_enc

    @property
    def b_enc(self) -> torch.Tensor:  # [d_sae]
        return self.sae.b_enc

    @property
    def W_dec(self) -> torch.Tensor:  # [d_sae, d_in]
        return self.sae.W_dec

    @property
    def b_dec(self) -> torch.Tensor:  # [d_in]
        return self.sae.b_dec

    # --- everything that reads an input centres it first ------------------------------------
    def split_batch(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(input, target): the target is the centred input, the part the SAE reconstructs."""
        return batch, self.centre(batch)

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:  # [..., d_in] -> [..., d_sae]
        return self.sae.pre_acts(self.centre(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # [..., d_in] -> [..., d_sae]
        return self.sae.encode(self.centre(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:  # [..., d_sae] -> [..., d_in]
        return self.sae.decode(z)

    def forward(self, x: torch.Tensor, **kwargs: Any) -> Any:
        """The wrapped SAE's own output (an ``SAEOutput`` for ours) on the centred input."""
        return self.sae(self.centre(x), **kwargs)


def trained_on_centred_stream(sae: Any) -> bool:
    """Whether a SAELens SAE's model was loaded with ``center_writing_weights`` on.

    SAELens records the keyword arguments it loaded the model with
    (``from_pretrained_no_processing(**kwargs)``) in ``cfg.metadata``.
    """
    metadata = getattr(sae.cfg, "metadata", None)
    kwargs = getattr(metadata, "model_from_pretrained_kwargs", None) or {}
    return bool(kwargs.get("center_writing_weights", False))


def load_pretrained_sae(
    release: str, sae_id: str, device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """A public SAE from SAELens's directory, e.g. ``("gpt2-small-res-jb", "blocks.8.hook_resid_pre")``.

    Wrapped in :class:`CentredInput` when it was trained on a centred residual stream, so
    that it reads the bridge's activations as it read HookedTransformer's. Needs the
    network once (or SAELens's cache); without it the error says to use the quick profile.
    """
    try:
        import sae_lens  # a full-profile dependency: a missing install gets the same advice

        with warnings.catch_warnings():  # its advice is for HookedTransformer; CentredInput is ours
            warnings.filterwarnings("ignore", message=".*non-empty model_from_pretrained_kwargs")
            sae = sae_lens.SAE.from_pretrained(release, sae_id, device=str(device))
    except Exception as error:  # no network, no cache, or a misspelt release / id
        raise RuntimeError(
            f"Could not load the public SAE {release!r} / {sae_id!r} "
            f"({type(error).__name__}: {error}). It needs the network once, to download it; "
            "without it, run the course on the bundled tiny model and its SAEs: set "
            "LAB_PROFILE=quick."
        ) from error
    sae.eval()
    return CentredInput(sae) if trained_on_centred_stream(sae) else sae
