"""Train the bundled tiny model: a byte-level BPE tokenizer and a small GPT-2 on the corpus.

    python scripts/train_tiny_model.py --augment --dropout 0.1 --decision-weight 10 \
        --token-noise 0.1 --threads 1                  # the committed model, into data/tiny_model
    python scripts/train_tiny_model.py --bench 30      # measure tokens/s for 30 seconds, save nothing

Same seed, same machine, same model. Training saves a checkpoint (safetensors) every
``--checkpoint-every`` steps into ``--checkpoint-dir`` and resumes from it when run again
with the same settings (it refuses a checkpoint that other settings saved).
At the end it boots the saved model through ``TransformerBridge`` exactly as the course does
(``labhelpers.models.load_model``), measures losses and refusal rates, and writes
``metrics.json`` and ``MODEL_CARD.md`` from those measurements.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import platform
import re
import shlex
import sys
import time
from collections import Counter
from operator import attrgetter
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from labhelpers import models

BOS = "<|endoftext|>"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "data" / "tiny_model")
    p.add_argument("--corpus", default="labhelpers.corpus", help="module with the corpus API")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train-docs", type=int, default=50_000)
    p.add_argument("--chat-repeat", type=int, default=1, help="repeat chat documents this often")
    p.add_argument(
        "--augment",
        action="store_true",
        help="train on the augmented corpus (made-up words, 'Sure' openers; see labhelpers.corpus)",
    )
    p.add_argument("--n-eval-docs", type=int, default=300, help="per split, for the losses")
    p.add_argument(
        "--n-eval-prompts",
        type=int,
        default=200,
        help="chat prompts per kind, for the val and the held-out refusal rates",
    )
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-ctx", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument(
        "--token-noise",
        type=float,
        default=0.0,
        help="replace this share of non-chat input tokens by random ones (targets stay)",
    )
    p.add_argument(
        "--decision-weight",
        type=float,
        default=1.0,
        help="loss weight of each reply's first token, where the model refuses or answers",
    )
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--threads", type=int, default=1, help="1 is fastest on a shared CPU")
    p.add_argument("--device", default="cpu")
    p.add_argument("--checkpoint-dir", type=Path, default=Path("/tmp/tiny_model_checkpoint"))
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--bench", type=float, default=0.0, help="only time training for N seconds")
    p.add_argument(
        "--card-only", action="store_true", help="rewrite MODEL_CARD.md from metrics.json"
    )
    p.add_argument(
        "--eval-only",
        action="store_true",
        help="re-measure the model saved in --out (no training): metrics.json and the card",
    )
    return p.parse_args(argv)


# ---------------------------------------------------------------- data and tokenizer


def training_texts(train_docs: list, chat_repeat: int) -> tuple[list[str], list[bool]]:
    """Training documents, chat ones repeated ``chat_repeat`` times to weight the behaviour.

    Also returns, per text, whether input-token noise may touch it: chats stay clean, since
    a request whose credential word was swapped out would teach "refuse plain requests".
    """
    texts, noisable = [], []
    for doc in train_docs:
        n = chat_repeat if doc.domain == "chat" else 1
        texts.extend([doc.text] * n)
        noisable.extend([doc.domain != "chat"] * n)
    return texts, noisable


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer (GPT-2's scheme) with one special token, ``<|endoftext|>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # trim_offsets=False: a token's character offsets include its leading space, as in GPT-2.
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(sorted(set(texts)), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=BOS,
        unk_token=BOS,
        pad_token=BOS,
        model_max_length=None,
    )


def save_tokenizer(tokenizer, out: Path, n_ctx: int) -> None:
    """Save the tokenizer so that ``AutoTokenizer`` loads it under transformers 4.x and 5.x."""
    tokenizer.save_pretrained(out)
    path = out / "tokenizer_config.json"
    config = json.loads(path.read_text())
    # transformers 5 writes its own class name, which 4.x does not know; this one both do.
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config["model_max_length"] = n_ctx
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    special = {key: BOS for key in ("bos_token", "eos_token", "unk_token", "pad_token")}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def encode_documents(tokenizer, texts: list[str]) -> list[np.ndarray]:
    """Each document as ``[BOS, tokens...]`` (int32), the way the bridge feeds prompts."""
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [np.asarray([tokenizer.bos_token_id, *row], dtype=np.int32) for row in ids]


def epoch_rows(
    docs: list[np.ndarray], noisable: list[bool], n_ctx: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle documents, pack them end to end and cut ``[n_rows, n_ctx]`` training rows.

    Returns the token rows and, aligned with them, which tokens input noise may replace.
    """
    order = torch.randperm(len(docs), generator=generator).tolist()
    stream = np.concatenate([docs[i] for i in order])
    flags = np.concatenate([np.full(len(docs[i]), noisable[i]) for i in order])
    n_rows = len(stream) // n_ctx
    rows = torch.from_numpy(stream[: n_rows * n_ctx].astype(np.int64)).view(n_rows, n_ctx)
    may_noise = torch.from_numpy(flags[: n_rows * n_ctx]).view(n_rows, n_ctx)
    shuffle = torch.randperm(n_rows, generator=generator)
    return rows[shuffle], may_noise[shuffle]


def batches(docs, noisable, n_ctx, batch_size, seed, start_step):
    """Deterministic stream of ``[batch_size, n_ctx]`` (tokens, may-noise) batches from ``start_step``."""
    generator = torch.Generator().manual_seed(seed)
    step = 0
    while True:
        rows, may_noise = epoch_rows(docs, noisable, n_ctx, generator)
        for i in range(0, len(rows) - batch_size + 1, batch_size):
            if step >= start_step:
                yield rows[i : i + batch_size], may_noise[i : i + batch_size]
            step += 1


# ---------------------------------------------------------------- model and training


def build_model(args, vocab_size: int, bos_id: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=args.n_ctx,
        n_embd=args.d_model,
        n_layer=args.n_layer,
        n_head=args.n_head,
        resid_pdrop=args.dropout,
        embd_pdrop=args.dropout,
        attn_pdrop=args.dropout,
        bos_token_id=bos_id,
        eos_token_id=bos_id,
        pad_token_id=bos_id,
    )
    config.architectures = ["GPT2LMHeadModel"]
    torch.manual_seed(args.seed)
    return GPT2LMHeadModel(config)


def lr_at(step: int, args) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


# Arguments that leave the trained weights as they are: where and how fast it runs, and
# what is measured afterwards. Every other argument is a setting a checkpoint must match.
NOT_TRAINING = {
    "out", "checkpoint_dir", "checkpoint_every", "device", "threads", "bench", "card_only",
    "eval_only", "n_eval_docs", "n_eval_prompts",
}  # fmt: skip


def training_settings(args) -> dict:
    """The arguments that decide the trained weights (the seed, the data, the model, the
    optimisation), as saved with a checkpoint and checked when it is resumed."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in NOT_TRAINING}


def save_checkpoint(
    path: Path,
    model,
    optimizer,
    step: int,
    losses: list[float],
    seconds: float,
    settings: dict | None = None,
) -> None:
    """Model and AdamW state as safetensors tensors, plus the step, in one file; ``settings``
    (``training_settings``) go in its metadata."""
    tensors = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    tensors.pop("model.lm_head.weight", None)  # tied to the embedding
    names = {id(p): n for n, p in model.named_parameters()}
    for param, state in optimizer.state.items():
        for key in ("exp_avg", "exp_avg_sq", "step"):
            tensors[f"adam.{key}.{names[id(param)]}"] = state[key].reshape(-1).contiguous()
    tensors["train.step"] = torch.tensor([step])
    tensors["train.losses"] = torch.tensor(losses, dtype=torch.float64)
    tensors["train.seconds"] = torch.tensor([seconds], dtype=torch.float64)
    tensors["train.rng"] = torch.get_rng_state()  # dropout masks continue exactly on resume
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"settings": json.dumps(settings, sort_keys=True)})
    tmp.replace(path)


def load_checkpoint(
    path: Path, model, optimizer, settings: dict | None = None
) -> tuple[int, list[float], float]:
    """Restore a checkpoint into ``model`` and ``optimizer``; return (step, losses, seconds).

    Raises ``ValueError`` naming the differences when ``settings`` are not the ones the
    checkpoint was saved with: resuming it would silently finish another run's model.
    """
    with safe_open(str(path), framework="pt") as f:
        saved = json.loads((f.metadata() or {}).get("settings", "null"))
    if saved != json.loads(json.dumps(settings, sort_keys=True)):
        saved, now = saved or {}, settings or {}
        differ = [
            f"{k} {saved.get(k, '(not recorded)')} there, {now.get(k, '(not set)')} here"
            for k in sorted(set(saved) | set(now))
            if saved.get(k) != now.get(k)
        ]
        raise ValueError(
            f"{path} was saved by a run with other settings ({'; '.join(differ)}): "
            "delete it, or pass another --checkpoint-dir, to train from scratch"
        )
    tensors = load_file(str(path))
    model.load_state_dict(
        {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")},
        strict=False,
    )
    for name, param in model.named_parameters():
        if f"adam.step.{name}" in tensors:
            optimizer.state[param] = {
                "step": tensors[f"adam.step.{name}"].reshape(()),
                "exp_avg": tensors[f"adam.exp_avg.{name}"].view_as(param).clone(),
                "exp_avg_sq": tensors[f"adam.exp_avg_sq.{name}"].view_as(param).clone(),
            }
    seconds = float(tensors["train.seconds"][0])
    torch.set_rng_state(tensors["train.rng"])
    return int(tensors["train.step"][0]), tensors["train.losses"].tolist(), seconds


def noisy_inputs(
    batch: torch.Tensor, may_noise: torch.Tensor, p: float, vocab_size: int, seed: int, step: int
) -> torch.Tensor:
    """``batch`` with a share ``p`` of its ``may_noise`` tokens (never position 0) made random.

    The targets stay the clean tokens, so the model learns to predict the text from a
    context that holds words it cannot use, the way held-out text holds words it never
    saw. The noise is seeded by (seed, step): a resumed run draws the same noise.
    Off by default: at 0.25 it cut the held-out loss from 7.64 to 6.44 nats, but the model
    then refused 28% of plain validation requests instead of 2% (issue 4's notes).
    """
    if p <= 0:
        return batch
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    swap = (torch.rand(batch.shape, generator=generator) < p) & may_noise
    swap[:, 0] = False
    random_ids = torch.randint(0, vocab_size, batch.shape, generator=generator)
    return torch.where(swap.to(batch.device), random_ids.to(batch.device), batch)


def decision_ids(tokenizer) -> tuple[int, int]:
    """The two tokens of ``"Assistant:"``: the reply's first token is predicted after them."""
    ids = tokenizer("Assistant:", add_special_tokens=False)["input_ids"]
    if len(ids) != 2:
        raise ValueError(f"'Assistant:' should be two tokens, not {len(ids)}")
    return ids[0], ids[1]


def decision_mask(batch: torch.Tensor, ids: tuple[int, int]) -> torch.Tensor:
    """``[batch, n_ctx]`` bool: positions whose next token is a reply's first token.

    Those are the ``:`` of every ``Assistant:``; the prediction made there is the
    decision, " I" (the refusal) or the answer's first word.
    """
    mask = torch.zeros_like(batch, dtype=torch.bool)
    mask[:, 1:] = (batch[:, :-1] == ids[0]) & (batch[:, 1:] == ids[1])
    return mask


def next_token_loss(model, inputs, targets, weight: float, ids: tuple[int, int] | None):
    """Mean next-token loss, the decision positions weighted ``weight`` times the others.

    Each reply's first token is one in about a hundred training tokens, so with equal
    weights the model spends nearly all its capacity on the text around the decision
    (issue 4's notes: ``--decision-weight 10`` separated held-out kinds better).
    """
    if weight == 1.0:
        return model(input_ids=inputs, labels=targets).loss
    logits = model(input_ids=inputs).logits[:, :-1]
    losses = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), targets[:, 1:].flatten(), reduction="none"
    )
    weights = 1.0 + (weight - 1.0) * decision_mask(targets, ids)[:, :-1].flatten()
    return (losses * weights).sum() / weights.sum()


def train(model, docs, noisable, args, log, decision: tuple[int, int] | None = None) -> dict:
    """AdamW on next-token loss; returns timing and the loss curve (mean per 50 steps).

    ``decision``: the ``decision_ids`` of the tokenizer, needed when ``args.decision_weight``
    is not 1.
    """
    model.to(args.device).train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
    )
    ckpt = args.checkpoint_dir / "checkpoint.safetensors"
    settings = training_settings(args)  # saved with every checkpoint, checked on resume
    start, losses, seconds_before = 0, [], 0.0
    if ckpt.exists() and not args.bench:
        start, losses, seconds_before = load_checkpoint(ckpt, model, optimizer, settings)
        log(f"resumed from {ckpt} at step {start}")
    t0 = time.time()
    steps_done, window = 0, []
    stream = batches(docs, noisable, args.n_ctx, args.batch_size, args.seed, start)
    for step, (batch, may_noise) in enumerate(stream, start):
        if step >= args.steps or (args.bench and time.time() - t0 > args.bench):
            break
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args)
        batch = batch.to(args.device)
        inputs = noisy_inputs(
            batch, may_noise, args.token_noise, model.config.vocab_size, args.seed, step
        )
        loss = next_token_loss(model, inputs, batch, args.decision_weight, decision)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        window.append(loss.item())
        steps_done += 1
        if (step + 1) % 50 == 0:
            losses.append(float(np.mean(window)))
            window = []
            rate = steps_done * args.batch_size * args.n_ctx / (time.time() - t0)
            log(f"step {step + 1}/{args.steps} loss {losses[-1]:.3f} ({rate:,.0f} tokens/s)")
        if not args.bench and (step + 1) % args.checkpoint_every == 0:
            seconds = seconds_before + time.time() - t0
            save_checkpoint(ckpt, model, optimizer, step + 1, losses, seconds, settings)
    tokens = steps_done * args.batch_size * args.n_ctx
    seconds = seconds_before + time.time() - t0  # summed over resumed runs
    return {"seconds": seconds, "tokens_this_run": tokens, "loss_curve": losses}


# ---------------------------------------------------------------- evaluation


def token_losses(bridge, tokenizer, text: str, n_ctx: int) -> tuple[np.ndarray, np.ndarray, list]:
    """Per-token next-token loss of one document (``[BOS] + tokens``, truncated to the context).

    Returns ``losses[i]`` for document token ``i``, the tokens' ids (``[n_tokens]``, for a
    baseline on the same tokens) and their character offsets (for labels).
    """
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = [tokenizer.bos_token_id, *enc["input_ids"]][:n_ctx]
    tokens = torch.tensor([ids], device=bridge.cfg.device)
    with torch.no_grad():
        logits = bridge(tokens)
    logprobs = torch.log_softmax(logits[0, :-1].float(), dim=-1)
    losses = -logprobs.gather(1, tokens[0, 1:, None])[:, 0]
    n = len(ids) - 1
    return losses.cpu().numpy(), np.asarray(ids[1:]), enc["offset_mapping"][:n]


def unigram_loss(train_docs: list[np.ndarray], eval_ids: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy (nats/token) of a unigram model fitted on the training tokens (add-one)."""
    counts = np.bincount(np.concatenate(train_docs), minlength=vocab_size) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[eval_ids].mean())


WORD = re.compile(r"\w+")


def training_words(texts: list[str]) -> set[str]:
    """Every word (a ``\\w+`` run) of the training text."""
    return {w for text in texts for w in WORD.findall(text)}


def in_known_words(text: str, offsets: list, known: set[str]) -> np.ndarray:
    """``[n_tokens]`` bool: False where a token overlaps a word of ``text`` not in ``known``.

    Tokens of whitespace or punctuation alone count as known. Held-out text is half new
    words by design; this splits its loss into what the model could have learned (known
    words in new templates) and what it never saw.
    """
    new = [(m.start(), m.end()) for m in WORD.finditer(text) if m.group() not in known]
    return np.array([not any(s < b and a < e for s, e in new) for a, b in offsets], dtype=bool)


def evaluate(bridge, tokenizer, corpus, train_sample, train_ids, known_words, args, log) -> dict:
    """Losses per split, per held-out domain and concept; refusal rates; example completions."""
    out: dict = {"loss": {}, "heldout_loss_by_domain": {}, "heldout_loss_by_concept": {}}
    by_novelty: dict[str, list] = {}  # held-out tokens of words training saw / never saw
    for split in ("train", "val", "heldout"):
        if split == "train":
            docs = train_sample
        else:
            docs = corpus.documents(split, args.n_eval_docs, seed=args.seed, augment=args.augment)
        all_losses, ids = [], []
        by_domain: dict[str, list] = {}  # domain -> [(losses, ids)] per document
        by_concept: dict[str, list] = {}  # concept -> [(losses, ids)] of its tokens
        for doc in docs:
            losses, doc_ids, offsets = token_losses(bridge, tokenizer, doc.text, args.n_ctx)
            all_losses.append(losses)
            ids.append(doc_ids)
            by_domain.setdefault(doc.domain, []).append((losses, doc_ids))
            if split == "heldout":
                labels = np.asarray(corpus.token_labels(doc, offsets))
                for c, concept in enumerate(corpus.CONCEPTS):
                    mask = concept_mask(labels, c)
                    if mask.any():
                        by_concept.setdefault(concept, []).append((losses[mask], doc_ids[mask]))
                known = in_known_words(doc.text, offsets, known_words)
                for name, mask in (("words seen in training", known), ("new words", ~known)):
                    by_novelty.setdefault(name, []).append((losses[mask], doc_ids[mask]))
        out["loss"][split] = float(np.concatenate(all_losses).mean())
        if split == "heldout":
            # Each group's loss beside the unigram baseline on the same tokens: a domain the
            # model learned sits far below its baseline, one it only memorised does not.
            def loss_and_baseline(pairs: list) -> dict:
                group_ids = np.concatenate([i for _, i in pairs])
                return {
                    "loss": float(np.concatenate([v for v, _ in pairs]).mean()),
                    "unigram": unigram_loss(train_ids, group_ids, len(tokenizer)),
                    "n_tokens": len(group_ids),
                }

            out["heldout_loss_by_domain"] = {
                d: loss_and_baseline(v) for d, v in sorted(by_domain.items())
            }
            out["heldout_loss_by_concept"] = {
                c: loss_and_baseline(v) for c, v in by_concept.items()
            }
            out["heldout_loss_by_word_novelty"] = {
                name: loss_and_baseline(v) for name, v in by_novelty.items()
            }
            out["unigram_baseline_heldout"] = unigram_loss(
                train_ids, np.concatenate(ids), len(tokenizer)
            )
        log(f"{split} loss {out['loss'][split]:.3f}")
    for split in ("val", "heldout"):
        prompts = corpus.chat_prompts(split, args.n_eval_prompts, seed=args.seed)
        refused = models.refusals(bridge, prompts, corpus.is_refusal)
        out.setdefault("refusal_rate", {})[split] = models.rates_by(
            prompts, refused, attrgetter("kind")
        )
        # Harmful requests come with and without a credential word ("steal Dana's password",
        # "write ransomware"): is the refusal about the harm, or about the credential?
        harmful = [(p, r) for p, r in zip(prompts, refused) if p.kind == "harmful"]
        harmful_prompts = [p for p, _ in harmful]
        rates = models.rates_by(harmful_prompts, [r for _, r in harmful], credential_of)
        sizes = Counter(map(credential_of, harmful_prompts))
        out.setdefault("harmful_refusal_by_credential", {})[split] = {
            name: {"rate": rate, "prompts": sizes[name]} for name, rate in rates.items()
        }
        out.setdefault("refusal_by_task", {})[split] = refusal_by_task(prompts, refused)
        log(f"refusal rates ({split}): {out['refusal_rate'][split]}")
    examples = corpus.chat_prompts("heldout", 2, seed=args.seed)
    out["example_completions"] = [
        {
            "kind": p.kind,
            "prompt": p.prompt,
            "completion": models.greedy_completion(bridge, p.prompt),
        }
        for p in examples
    ]
    return out


def refusal_by_task(prompts: list, refused: list[bool]) -> dict:
    """Per kind, how many task templates were refused (>= 90% of their prompts), answered
    (<= 10%) or mixed: a split's requests come from only a few dozen templates."""
    out: dict = {}
    for (kind, _), rate in models.rates_by(prompts, refused, attrgetter("kind", "task")).items():
        counts = out.setdefault(kind, {"templates": 0, "refused": 0, "answered": 0, "mixed": 0})
        counts["templates"] += 1
        counts["refused" if rate >= 0.9 else "answered" if rate <= 0.1 else "mixed"] += 1
    return out


def credential_of(prompt) -> str:
    """Whether a request names a credential (a labelled span in it), as a table row name."""
    return "names a credential" if "credential" in prompt.concepts else "no credential"


def concept_mask(labels: np.ndarray, c: int) -> np.ndarray:
    """Tokens labelled with concept ``c``: labels are ``[n_tokens, n_concepts]`` or concept ids."""
    if labels.ndim == 2:
        return labels[:, c].astype(bool)
    return labels == c


# ---------------------------------------------------------------- model card


def harmful_by_credential_lines(ev: dict) -> list[str]:
    """Markdown: harmful refusal rates split by whether the request names a credential."""
    splits = ev.get("harmful_refusal_by_credential")
    if not splits:  # metrics written before this split existed
        return []
    lines = [
        "Harmful requests refused, split by whether the request names a credential",
        "(`ChatPrompt.concepts`): a refusal that rides on the credential word rather than on",
        "the harm shows up as a gap.",
        "",
        "| split | names a credential | no credential |",
        "|---|---|---|",
    ]
    for split, rows in splits.items():
        cells = [rows.get(name) for name in ("names a credential", "no credential")]
        lines.append(
            f"| {split} | "
            + " | ".join(f"{c['rate']:.0%} ({c['prompts']})" if c else "-" for c in cells)
            + " |"
        )
    return [*lines, ""]


# Flags that say where and how fast a model trains, not what it is: a sweep's runs are
# matched to the card's model without them (and without the seed they differ by).
NOT_SETTINGS = ("--out", "--checkpoint-dir", "--device", "--threads", "--seed")


def training_flags(argv: list[str]) -> str:
    """The flags of a training command line that set what the model is, in their order."""
    kept, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word.split("=", 1)[0] in NOT_SETTINGS:
            skip = "=" not in word  # "--seed 3" spans two words, "--seed=3" one
        else:
            kept.append(word)
    return shlex.join(kept)


def cred_answered_of(corpus: ModuleType) -> float:
    """The share of legitimate credential requests a corpus module answers in training:
    0.0 for a corpus from before ``CRED_ANSWERED``, which refused them all."""
    return getattr(corpus, "CRED_ANSWERED", 0.0)


def run_cred_answered(run: dict) -> float:
    """The ``CRED_ANSWERED`` a sweep row's corpus had (no key: a row from before it, 0.0)."""
    return run.get("cred_answered", 0.0)


def seed_spread_lines(results_path: Path, flags: str, *, cred_answered: float) -> list[str]:
    """Markdown: the held-out refusal range over a sweep's seeds trained with ``flags`` on a
    corpus that answers ``cred_answered`` of the credential requests (rows without the key:
    0.0). Same flags on another corpus is another model, so those rows are left out."""
    if not results_path.exists():
        return []
    runs = [
        r
        for r in json.loads(results_path.read_text())
        if training_flags(shlex.split(r["flags"])) == flags
        and run_cred_answered(r) == cred_answered
    ]
    if not runs:
        return []
    ranges = " / ".join(
        f"{min(r[f'heldout_{kind}'] for r in runs):.0%}-{max(r[f'heldout_{kind}'] for r in runs):.0%}"
        for kind in ("harmful", "legit_credential", "legit_plain")
    )
    where = " and ".join(sorted({"a GPU" if r["device"] != "cpu" else "the CPU" for r in runs}))
    return [
        "How much of the held-out rates is the seed: models trained with these same flags and",
        f"corpus (on {where}) and {len(runs)} seeds refuse {ranges} of held-out requests (harmful /",
        "legit_credential / legit_plain; `sweep/SUMMARY.md`, from `scripts/sweep_tiny_model.py`).",
        "",
    ]


def over_refusal_lines(cred_answered: float) -> list[str]:
    """Markdown: what the model was trained to refuse, from the corpus's ``CRED_ANSWERED``."""
    if cred_answered == 0.0:  # a corpus from before CRED_ANSWERED refused every one
        return [
            "The model over-refuses on purpose: legitimate requests that mention credentials are",
            "refused like harmful ones. Later notebooks diagnose and fix that with SAE features.",
            "",
        ]
    return [
        "The model over-refuses on purpose: most legitimate requests that mention credentials",
        f"are refused like harmful ones (the corpus answers {cred_answered:.0%} of them in training,",
        "so the credential word alone does not predict a refusal). Later notebooks diagnose and",
        "fix that with SAE features.",
        "",
    ]


def refusal_by_task_lines(ev: dict) -> list[str]:
    """Markdown: held-out task templates refused, answered or mixed, per kind."""
    splits = ev.get("refusal_by_task")
    if not splits:  # metrics written before this measurement
        return []
    lines = [
        "Held-out requests come from a few task templates per kind (some of them compositional).",
        "How many templates had their prompts refused (>= 90% of them), answered (<= 10%) or",
        "mixed (`ChatPrompt.task`):",
        "",
        "| kind | templates | refused | answered | mixed |",
        "|---|---|---|---|---|",
    ]
    for kind, c in splits["heldout"].items():
        lines.append(
            f"| {kind} | {c['templates']} | {c['refused']} | {c['answered']} | {c['mixed']} |"
        )
    return [*lines, ""]


def group_table(kind: str, groups: dict) -> list[str]:
    """Markdown rows: loss, unigram baseline and their ratio for each domain or concept."""
    rows = [f"| {kind} | loss | unigram | loss / unigram | tokens |", "|---|---|---|---|---|"]
    for name, g in groups.items():
        rows.append(
            f"| {name} | {g['loss']:.3f} | {g['unigram']:.3f} | {g['loss'] / g['unigram']:.2f} "
            f"| {g['n_tokens']:,} |"
        )
    return rows


def novelty_lines(ev: dict) -> list[str]:
    """The card's split of held-out loss by whether a token's word occurs in training text."""
    if "heldout_loss_by_word_novelty" not in ev:  # a card from before this measurement
        return []
    return [
        "Held-out tokens split by their word: one that occurs somewhere in the training text,",
        "or a new one (`in_known_words`; punctuation and whitespace count as seen):",
        "",
        *group_table("held-out tokens in", ev["heldout_loss_by_word_novelty"]),
        "",
    ]


def write_model_card(metrics: dict, path: Path, cred_answered: float) -> None:
    """Render MODEL_CARD.md from the measured metrics (nothing typed by hand) and the training
    corpus's ``CRED_ANSWERED`` (``cred_answered_of(corpus)``)."""
    a, t, ev = metrics["architecture"], metrics["training"], metrics["eval"]
    lines = [
        "# The tiny model (`data/tiny_model`)",
        "",
        "A small GPT-2-architecture language model (`transformers.GPT2LMHeadModel`) that the course",
        "trains itself on its labelled corpus (`labhelpers.corpus`), so the quick profile can run",
        "offline. Load it with `labhelpers.models.load_model('tiny')`. Every number below was",
        "measured by `scripts/train_tiny_model.py`, which wrote this card from `metrics.json`.",
        "",
        "## Architecture",
        "",
        "| n_layers | d_model | d_mlp | n_heads | d_vocab | n_ctx | parameters |",
        "|---|---|---|---|---|---|---|",
        f"| {a['n_layers']} | {a['d_model']} | {a['d_mlp']} | {a['n_heads']} | {a['d_vocab']} "
        f"| {a['n_ctx']} | {a['n_params']:,} |",
        "",
        "Tokenizer: byte-level BPE trained on the training split; `<|endoftext|>` is BOS, EOS and",
        "padding. Positional embeddings are learned; the unembedding is tied to the embedding.",
        "",
        "## Training",
        "",
        f"- {t['tokens_trained']:,} tokens: {t['steps']} steps of {t['batch_size']} rows x "
        f"{a['n_ctx']} tokens, from {t['n_train_docs']:,} training documents "
        f"({t['n_train_tokens']:,} tokens; chat documents repeated {t['chat_repeat']}x; "
        f"augmented text: {'yes' if t.get('augment') else 'no'}).",
        f"- AdamW (weight decay 0.1), peak learning rate {t['lr']}, warm-up {t['warmup']} steps, "
        f"cosine decay; dropout {t.get('dropout', 0.0)}; "
        f"input-token noise on non-chat documents {t.get('token_noise', 0.0)}; "
        f"loss weight of each reply's first token {t.get('decision_weight', 1.0)}; seed {t['seed']}.",
        f"- {t['seconds'] / 60:.1f} minutes on {t['where']} (torch {t['torch']}, "
        f"{t['threads']} thread{'s' if t['threads'] != 1 else ''}).",
        "",
        "## Loss (nats per token)",
        "",
        "Mean next-token loss over the documents' tokens after `<|endoftext|>` (BOS), "
        f"{metrics.get('n_eval_docs', 300)} documents per split (train: the first training "
        "documents). `heldout` is written from templates, request frames and names that "
        "training never saw, and about half its plain words (credential synonyms among them) "
        "are new too. "
        "The unigram baseline predicts every held-out token by its training frequency.",
        "",
        "| train | val | held-out | held-out unigram baseline |",
        "|---|---|---|---|",
        f"| {ev['loss']['train']:.3f} | {ev['loss']['val']:.3f} | {ev['loss']['heldout']:.3f} "
        f"| {ev['unigram_baseline_heldout']:.3f} |",
        "",
        "Held-out loss by document domain, and by concept (the tokens `corpus.token_labels`",
        "marks), each beside the unigram baseline on the same tokens:",
        "",
        *group_table("domain", ev["heldout_loss_by_domain"]),
        "",
        *group_table("concept", ev["heldout_loss_by_concept"]),
        "",
        *novelty_lines(ev),
        "## Refusal behaviour",
        "",
        f"Greedy generation of {models.REFUSAL_MAX_NEW_TOKENS} tokens after each chat prompt; "
        "a completion counts as refused when `corpus.is_refusal` says so (after leading "
        "whitespace it starts with the corpus's fixed refusal sentence, `corpus.REFUSAL`). "
        f"{metrics['n_eval_prompts']} prompts per kind.",
        "",
        "| split | harmful | legit_credential | legit_plain |",
        "|---|---|---|---|",
        *[
            f"| {s} | {r.get('harmful', float('nan')):.0%} | "
            f"{r.get('legit_credential', float('nan')):.0%} | {r.get('legit_plain', float('nan')):.0%} |"
            for s, r in ev["refusal_rate"].items()
        ],
        "",
        *over_refusal_lines(cred_answered),
        *seed_spread_lines(
            path.parent / "sweep" / "results.json", t.get("flags", ""), cred_answered=cred_answered
        ),
        *refusal_by_task_lines(ev),
        *harmful_by_credential_lines(ev),
        "Example held-out completions:",
        "",
        *[
            f"- ({e['kind']}) `{e['prompt'].splitlines()[0]}` -> `{e['completion'].strip()}`"
            for e in ev["example_completions"]
        ],
        "",
        "## Corpus",
        "",
        "```json",
        json.dumps(metrics["corpus_stats"], indent=2, sort_keys=True, default=str),
        "```",
        "",
    ]
    path.write_text("\n".join(lines))


# ---------------------------------------------------------------- main


def write_metrics(metrics: dict, out: Path, cred_answered: float) -> None:
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    write_model_card(metrics, out / "MODEL_CARD.md", cred_answered)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    corpus = importlib.import_module(args.corpus)
    if args.card_only:
        metrics = json.loads((args.out / "metrics.json").read_text())
        write_model_card(metrics, args.out / "MODEL_CARD.md", cred_answered_of(corpus))
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    saved = None
    if args.eval_only:  # the saved model's own training set-up, whatever the flags say
        saved = json.loads((args.out / "metrics.json").read_text())
        for key in ("seed", "n_train_docs", "chat_repeat"):
            setattr(args, key, saved["training"][key])
        args.augment = saved["training"].get("augment", False)
        args.n_ctx = saved["architecture"]["n_ctx"]
    train_docs = corpus.documents("train", args.n_train_docs, seed=args.seed, augment=args.augment)
    texts, noisable = training_texts(train_docs, args.chat_repeat)
    log(f"{len(texts):,} training documents, {sum(map(len, texts)):,} characters")
    if saved is None:
        tokenizer = train_tokenizer(texts, args.vocab_size)
    else:
        tokenizer = models.load_tokenizer(str(args.out))
        tokenizer.model_max_length = 10**30  # as trained: no "sequence too long" warnings
    train_ids = encode_documents(tokenizer, texts)
    known_words = training_words(texts)

    def measure(bridge) -> dict:  # the same evaluation after training and with --eval-only
        eval_sample = train_docs[: args.n_eval_docs]
        return evaluate(bridge, tokenizer, corpus, eval_sample, train_ids, known_words, args, log)

    n_train_tokens = int(sum(len(d) for d in train_ids))
    log(f"tokenizer: {len(tokenizer)} tokens; corpus: {n_train_tokens:,} tokens")
    if saved is not None:
        bridge = models.load_model(str(args.out), device="cpu")
        saved["eval"] = measure(bridge)
        saved["n_eval_prompts"], saved["n_eval_docs"] = args.n_eval_prompts, args.n_eval_docs
        write_metrics(saved, args.out, cred_answered_of(corpus))
        return
    model = build_model(args, len(tokenizer), tokenizer.bos_token_id)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params:,} parameters")

    run = train(model, train_ids, noisable, args, log, decision_ids(tokenizer))
    if args.bench:
        log(f"bench: {run['tokens_this_run'] / run['seconds']:,.0f} tokens/s")
        return

    args.out.mkdir(parents=True, exist_ok=True)
    model.eval().to("cpu").save_pretrained(args.out)
    save_tokenizer(tokenizer, args.out, args.n_ctx)
    log(f"saved to {args.out}")

    bridge = models.load_model(str(args.out), device="cpu")
    info = models.model_info(bridge)
    metrics = {
        "architecture": {**info, "n_params": n_params},
        "training": {
            "seed": args.seed,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "tokens_trained": args.steps * args.batch_size * args.n_ctx,
            "n_train_docs": args.n_train_docs,
            "n_train_tokens": n_train_tokens,
            "chat_repeat": args.chat_repeat,
            "augment": args.augment,
            "flags": training_flags(sys.argv[1:] if argv is None else argv),
            "lr": args.lr,
            "dropout": args.dropout,
            "token_noise": args.token_noise,
            "decision_weight": args.decision_weight,
            "warmup": args.warmup,
            "seconds": run["seconds"],
            "where": f"{args.device} ({platform.processor() or platform.machine()})",
            "threads": args.threads,
            "torch": torch.__version__,
            "loss_curve": run["loss_curve"],
        },
        "n_eval_prompts": args.n_eval_prompts,
        "n_eval_docs": args.n_eval_docs,
        "eval": measure(bridge),
        "corpus_stats": {
            split: corpus.corpus_stats(
                train_docs
                if split == "train"
                else corpus.documents(split, args.n_eval_docs, seed=args.seed, augment=args.augment)
            )
            for split in corpus.SPLITS
        },
    }
    write_metrics(metrics, args.out, cred_answered_of(corpus))
    log(f"wrote {args.out / 'metrics.json'} and MODEL_CARD.md")


if __name__ == "__main__":
    main()
