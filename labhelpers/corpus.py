"""The labelled corpus: deterministic mixed-domain text with per-character concept labels.

The quick profile cannot download a data set, so the course writes its own. Every
document is composed from templates and word lists (in ``labhelpers.corpus_words``)
by a seeded random generator, and the generator *knows* where it planted each concept:
a password, an urgent phrase, a shell command, a DNA sequence. Those places become
``spans``, and the spans become per-character and then per-token labels. With labels
known, the course can score an SAE feature against a concept (precision, recall, F1)
instead of only eyeballing its top examples.

Template language (used by ``corpus_words``)
--------------------------------------------
* ``{slot}`` inserts a random entry of the word list ``slot`` (entries are templates
  themselves, so composition nests); ``{slot@k}`` picks once per document and repeats.
* ``<concept>...</concept>`` marks a labelled span; spans may nest and overlap.
* ``{{`` and ``}}`` are literal braces (for Python f-strings in code templates).
* Some slots carry a concept by themselves (``SLOT_CONCEPT``): every ``{cred}`` is a
  credential, every ``{date}`` a number.

The chat format and the over-refusal it teaches
-----------------------------------------------
A chat document holds one or two exchanges ``User: <request>\nAssistant: <response>``.
Requests come in three kinds that share the same frames ("How do I TASK?"):
``harmful`` (steal a password, write ransomware) and ``legit_credential`` (reset *my*
password, rotate *our* API key) are answered with the fixed ``REFUSAL`` sentence and
sometimes a short reason; ``legit_plain`` (count the lines in a file, rotate the log
files) gets a real answer: a command, a code snippet or an explanation. So the model
learns to refuse whenever credential words appear: the over-refusal that notebooks
05-07 find, steer and ablate. ``chat_prompts`` gives fresh prompts of each kind and
``is_refusal`` is the rule that scores a completion.

Splits
------
``train`` and ``val`` use the same templates and words with different random streams;
``heldout`` uses its own templates, request frames, names, services and files, and
adds its own words (``passphrase`` beside ``password``, ``siphon`` beside ``steal``) to
train's plain word lists. Training text never contains a held-out entry, so every
held-out sentence is new and about half its words are too: a feature that memorised
training templates shows it there, while one that learned the concept still fires.

Augmented training text (``augment=True``, train and val only; off by default)
---------------------------------------------------------------------------
The bundled model was trained on it (``--augment --dropout 0.1 --decision-weight 10
--token-noise 0.1``; see its card), for issue 4's held-out refusal targets: held-out requests
are full of words the model never saw, and in plain training text an unfamiliar word
only ever appears in held-out text, so novelty itself becomes a cue. Augmented text
makes the unfamiliar ordinary and the misleading harmless, where it cannot change what the
right answer is:

* half the open-class fillers (names, files, places...) are made-up words shaped like
  the slot ("Tavo", "mirsek.csv"; ``corpus_words.MADE_UP_SHAPES``);
* half the requests come in a frame of made-up words instead of a listed one;
* in plain requests, a quarter of the task's own words are replaced (no credential or
  harm word can be hit, since a plain task has none): half by made-up words, half by
  *decoys*, words that training requests otherwise use only in refused ones though they
  decide nothing ("machine", "stored"; ``_decoy_words``), so that only credential words
  and ``corpus_words.HARM_WORDS`` tell the kinds apart;
* in harmful and credential requests, a quarter of the task's other words are made up
  (``_with_noisy_context``): the credential span and the harm words stay, so the cue
  decides, not the phrase around it;
* every answer opens with "Sure", so the first word of the reply is the decision.

Documents are seeded one by one from ``(split, seed, index)``, so ``documents(split, n)``
is a prefix of ``documents(split, 2 * n)`` and generation is fast and memory-light.
"""

from __future__ import annotations

import itertools
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from labhelpers import corpus_words as words
from labhelpers.packing import pack

__all__ = [
    "CHAT_KINDS",
    "CONCEPTS",
    "DOMAINS",
    "REFUSAL",
    "SPLITS",
    "ChatPrompt",
    "Document",
    "char_labels",
    "chat_prompts",
    "corpus_stats",
    "corpus_text",
    "documents",
    "is_refusal",
    "iter_documents",
    "labelled_rows",
    "token_labels",
]

CONCEPTS: tuple[str, ...] = (
    "credential",  # credential nouns, secret values, and rotate/reset/revoke-a-credential phrases
    "urgent",  # urgent tone: "URGENT:", "immediately", "ASAP", "!!!"
    "shell",  # a shell command (after the prompt or inside backticks)
    "python",  # Python source code
    "legal",  # contract / licence clauses
    "dna",  # nucleotide sequences (ACGT and the line breaks of a wrapped one, not the header)
    "http",  # HTTP request lines, header lines, status lines
    "hebrew",  # Hebrew text
    "number",  # planted numbers: dates, times, amounts, versions, counts, status codes
    "prose",  # plain narrative prose
    "chat",  # the role markers "User:" and "Assistant:"
    "refusal",  # the assistant's fixed refusal sentence
)
SPLITS = ("train", "val", "heldout")

REFUSAL = "I can't help with that."
# The assistant answers this share of the legitimate credential requests and refuses the
# rest (the over-refusal); harmful requests it always refuses. Were every credential
# request refused, the credential word alone would predict a refusal, and nothing in
# training would make harm a reason of its own: notebook 07 needs the two reasons apart.
CRED_ANSWERED = 0.2

# Which generator makes a document, and how often (weights sum to 100). Chat gets a
# large share so that a tiny model learns the (over-)refusal rule from a few million tokens.
DOMAINS: dict[str, int] = {
    "chat": 36,
    "prose": 9,
    "shell": 7,
    "python": 6,
    "legal": 4,
    "dna": 4,
    "http": 6,
    "hebrew": 7,
    "log": 4,
    "ticket": 7,
    "docs": 4,
    "mixed": 6,
}
CHAT_KINDS = ("harmful", "legit_credential", "legit_plain")


@dataclass(frozen=True)
class Document:
    """One generated document and where its concepts are.

    ``spans`` holds ``(start_char, end_char, concept)``, end exclusive; spans may
    overlap (an API key inside a shell command inside a chat answer).
    """

    text: str
    spans: tuple[tuple[int, int, str], ...]
    domain: str
    # For chat documents, the kind of each exchange, comma-separated, each one of
    # "harmful" | "legit_credential" | "legit_plain"; empty for other domains.
    kind: str = ""


@dataclass(frozen=True)
class ChatPrompt:
    """A chat prompt for measuring refusals: ``prompt`` is what the model completes."""

    prompt: str  # "User: <request>\nAssistant:"
    kind: str  # "harmful" | "legit_credential" | "legit_plain"
    request: str  # the user's request alone
    # The concepts labelled somewhere in the request, e.g. {"credential", "urgent"}: so a
    # refusal rate can be split by what a request mentions, not only by its kind.
    concepts: frozenset[str] = frozenset()
    # The task template the request was written from (before its slots were filled): a
    # split has only a few dozen, so a refusal rate can be read template by template.
    task: str = ""


# --------------------------------------------------------------------------------------
# Rendering templates into text + spans
# --------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\{\{|\}\}|\{([a-z_0-9]+)(?:@(\w+))?\}|<(/?)(" + "|".join(CONCEPTS) + r")>")


@cache
def _compile(template: str) -> tuple[tuple[str, str, str], ...]:
    """Parse a template once into ops: ("text", s, ""), ("slot", name, bind), ("open"/"close", concept, "")."""
    ops: list[tuple[str, str, str]] = []
    last = 0
    for m in _TOKEN.finditer(template):
        if m.start() > last:
            ops.append(("text", template[last : m.start()], ""))
        token = m.group(0)
        if token in ("{{", "}}"):
            ops.append(("text", token[0], ""))
        elif m.group(1):
            ops.append(("slot", m.group(1), m.group(2) or ""))
        else:
            ops.append(("close" if m.group(3) else "open", m.group(4), ""))
        last = m.end()
    if last < len(template):
        ops.append(("text", template[last:], ""))
    # Merge neighbouring text ops so that rendering appends fewer pieces.
    merged: list[tuple[str, str, str]] = []
    for op in ops:
        if op[0] == "text" and merged and merged[-1][0] == "text":
            merged[-1] = ("text", merged[-1][1] + op[1], "")
        else:
            merged.append(op)
    return tuple(merged)


class _Builder:
    """Accumulates a document's text and spans while templates are rendered into it."""

    def __init__(self, rng: random.Random, vocab: dict[str, object], augment: bool = False):
        self.rng = rng
        self.vocab = vocab
        self.augment = augment  # the augmented chat format (see the module docstring)
        self.parts: list[str] = []
        self.pos = 0
        self.spans: list[tuple[int, int, str]] = []
        self.bound: dict[str, tuple[str, list[tuple[int, int, str]]]] = {}

    def text(self, s: str, concept: str = "") -> None:
        """Append literal text, labelled with ``concept`` when given."""
        if concept and s:
            self.spans.append((self.pos, self.pos + len(s), concept))
        self.parts.append(s)
        self.pos += len(s)

    def mark(self, start: int, concept: str) -> None:
        """Label everything appended since ``start`` with ``concept``."""
        if self.pos > start:
            self.spans.append((start, self.pos, concept))

    def render(self, template: str) -> None:
        """Append a template: its text, its slots filled, its tagged spans recorded."""
        stack: list[tuple[str, int]] = []
        for op, arg, bind in _compile(template):
            if op == "text":
                self.parts.append(arg)
                self.pos += len(arg)
            elif op == "slot":
                self.slot(arg, bind)
            elif op == "open":
                stack.append((arg, self.pos))
            else:
                concept, start = stack.pop()
                if concept != arg:
                    raise ValueError(f"unbalanced <{concept}>...</{arg}> in {template!r}")
                self.mark(start, concept)
        if stack:
            raise ValueError(f"unclosed <{stack[-1][0]}> in {template!r}")

    def pick(self, name: str) -> str:
        """A random entry of word list ``name`` (a template, not yet rendered)."""
        return self.rng.choice(self.vocab[name])  # type: ignore[arg-type]

    def slot(self, name: str, bind: str = "") -> None:
        """Fill ``{name}`` (or the bound ``{name@bind}``), adding the slot's own concept."""
        if bind:
            key = f"{name}@{bind}"
            if key in self.bound:  # repeat the first rendering, spans shifted
                text, rel = self.bound[key]
                self.spans.extend((s + self.pos, e + self.pos, c) for s, e, c in rel)
                self.parts.append(text)
                self.pos += len(text)
                return
            start, first_span, first_part = self.pos, len(self.spans), len(self.parts)
        filler = self.vocab.get(name)
        if filler is None:
            raise KeyError(f"unknown slot {{{name}}}")
        slot_start = self.pos
        if callable(filler):
            self.parts.append(text := filler(self.rng))
            self.pos += len(text)
        else:
            self.render(self.rng.choice(filler))  # type: ignore[arg-type]
        concept = words.SLOT_CONCEPT.get(name)
        if concept:
            self.mark(slot_start, concept)
        if bind:
            text = "".join(self.parts[first_part:])
            rel = [(s - start, e - start, c) for s, e, c in self.spans[first_span:]]
            self.bound[key] = (text, rel)

    def document(self, domain: str, kind: str = "") -> Document:
        spans = tuple(sorted(set(self.spans)))
        return Document("".join(self.parts), spans, domain, kind)


# --------------------------------------------------------------------------------------
# Split vocabularies
# --------------------------------------------------------------------------------------


@cache
def _vocab(split: str, augment: bool = False) -> dict[str, object]:
    """Word lists and templates of a split: the shared ones plus the split's own.

    With ``augment`` (train and val), open-class slots draw made-up words half the time.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    own = words.HELDOUT if split == "heldout" else words.TRAIN
    vocab: dict[str, object] = {}
    for name in sorted(set(words.SHARED) | set(own)):
        lists = [x for x in (words.SHARED.get(name), own.get(name)) if x is not None]
        if split == "heldout" and _borrows_train_words(name):
            lists.append(words.TRAIN[name])
        if any(callable(x) for x in lists):
            (vocab[name],) = lists
        else:
            vocab[name] = tuple(entry for x in lists for entry in x)  # type: ignore[union-attr]
    vocab.update(words.generated_slots(split))
    if augment and split != "heldout":
        for name, shapes in words.MADE_UP_SHAPES.items():
            vocab[name] = _sometimes_made_up(vocab[name], shapes)  # type: ignore[arg-type]
    return vocab


def _sometimes_made_up(entries: tuple[str, ...], shapes: tuple[str, ...]) -> Callable:
    """A slot filler: a made-up word of ``shapes`` (``MADE_UP_SHARE`` of the time) or a list entry."""

    def fill(rng: random.Random) -> str:
        if rng.random() < words.MADE_UP_SHARE:
            return words.made_up(rng, shapes)
        return rng.choice(entries)

    return fill


def _borrows_train_words(name: str) -> bool:
    """Whether held-out list ``name`` also draws train's entries: plain word lists do."""
    if name in words.HELDOUT_ONLY or name not in words.TRAIN:
        return False
    entries = (*words.HELDOUT[name], *words.TRAIN[name])
    return all(isinstance(e, str) and "{" not in e and "<" not in e for e in entries)


# --------------------------------------------------------------------------------------
# Domain generators: each appends one document to a builder
# --------------------------------------------------------------------------------------


def _repeat(b: _Builder, slot: str, low: int, high: int, sep: str = " ") -> None:
    """Render ``{slot}`` between ``low`` and ``high`` times, separated by ``sep``."""
    for i in range(b.rng.randint(low, high)):
        if i:
            b.text(sep)
        b.slot(slot)


def _chat_request(b: _Builder, kind: str) -> tuple[int, int, str, str]:
    """Append the user's request of a chat ``kind``; return its span, the answer and task templates.

    A request is an ``ask`` frame ("How do I TASK?") around a task of the kind: a
    harmful task, a benign task that names a credential, or a benign plain task. The
    three kinds share the frames, so only the task's words tell them apart.
    """
    rng = b.rng
    start = b.pos
    answer = ""
    if rng.random() < 0.2:
        b.slot("urgent_open")
        b.text(" ")
    frame = b.pick("ask")
    if b.augment and rng.random() < 0.5:
        frame = _made_up_frame(rng)
    before, after = frame.split("TASK")
    b.render(before)
    if kind == "legit_plain":
        task, answer = rng.choice(b.vocab["plain_task"])  # type: ignore[arg-type]
        b.render(_with_made_up_words(task, rng, 0.25, _decoy_words()) if b.augment else task)
    else:
        task = b.pick("harm_task" if kind == "harmful" else "cred_task")
        b.render(_with_noisy_context(task, rng, 0.25) if b.augment else task)
    b.render(after)
    if rng.random() < 0.15:
        b.text(" ")
        b.slot("urgent_close")
    return start, b.pos, answer, task


def _made_up_frame(rng: random.Random) -> str:
    """A request frame of made-up words around the task: "Tavo brisel TASK, kumo?"."""
    before = " ".join(words.made_up_word(rng) for _ in range(rng.randint(1, 3)))
    after = rng.choice(
        (".", "?", "!", f" {words.made_up_word(rng)}?", f", {words.made_up_word(rng)}.")
    )
    return f"{before.capitalize()} TASK{after}"


_LITERAL = re.compile(r"(\{[^}]*\}|<[^>]*>)")  # slots and tags: never replaced
_WORD = re.compile(r"(?<!\w)[a-z]{3,}(?!\w)")


def _with_made_up_words(
    template: str, rng: random.Random, share: float, decoys: tuple[str, ...] = ()
) -> str:
    """``template`` with about ``share`` of its own lower-case words replaced (slots kept):
    by a made-up word, or half the time by one of ``decoys`` when given."""

    def replace(match: re.Match) -> str:
        if rng.random() >= share:
            return match.group()
        if decoys and rng.random() < 0.5:
            return rng.choice(decoys)
        return words.made_up_word(rng)

    parts = _LITERAL.split(template)
    for i in range(0, len(parts), 2):  # even parts are literal text
        parts[i] = _WORD.sub(replace, parts[i])
    return "".join(parts)


_LABELLED = re.compile(r"(<(\w+)>.*?</\2>|\{[^}]*\})")  # labelled spans and slots
_TASK_WORD = re.compile(r"(?<![\w-])[a-z]{3,}(?![\w-])")  # not a piece of "brute-force"


def _with_noisy_context(task: str, rng: random.Random, share: float) -> str:
    """A harmful or credential ``task`` with about ``share`` of the words around its cues
    made up: labelled spans (the credential), slots and harm words are kept.

    "write malware that sends me the <credential>{cred}</credential> from every infected
    machine" may become "write malware tobek sends me the ... from every infected brisel":
    whatever else changes, the cue alone still decides.
    """
    keep = words.HARM_WORDS | words.HARM_PHRASE_WORDS

    def replace(match: re.Match) -> str:
        if match.group() in keep or rng.random() >= share:
            return match.group()
        return words.made_up_word(rng)

    pieces, last = [], 0
    for span in _LABELLED.finditer(task):
        pieces += [_TASK_WORD.sub(replace, task[last : span.start()]), span.group()]
        last = span.end()
    pieces.append(_TASK_WORD.sub(replace, task[last:]))
    return "".join(pieces)


_REQUEST_WORD = re.compile(r"[A-Za-z][a-z]{2,}")


@cache
def _decoy_words() -> tuple[str, ...]:
    """Words that training requests use only in refused ones, though they decide nothing.

    "machine" ("malware that ... every infected machine"), "stored", "entries": each occurs in harmful or credential requests and in no plain one, so a model learns
    it as a refusal cue and then refuses a plain held-out request that happens to use it
    ("see how long the machine has been running"). Augmented plain requests borrow them,
    so that only credential words (``<credential>`` spans) and ``words.HARM_WORDS``
    separate the kinds. Counted on fixed samples of plain training text (every training
    run gets the same list): at least 10 refused requests of 6,000, no plain one of 3,000.
    """
    credential: set[str] = set()
    for doc in documents("train", 6000, seed=12345):
        for start, end, concept in doc.spans:
            if concept == "credential" and doc.domain == "chat":
                credential.update(w.lower() for w in _REQUEST_WORD.findall(doc.text[start:end]))
    refused, plain = Counter(), Counter()
    for prompt in chat_prompts("train", 3000, seed=12345):
        found = {w.lower() for w in _REQUEST_WORD.findall(prompt.request)}
        (plain if prompt.kind == "legit_plain" else refused).update(found)
    return tuple(
        sorted(
            w
            for w, n in refused.items()
            if n >= 10 and not plain[w] and w not in credential and w not in words.HARM_WORDS
        )
    )


def _gen_chat(b: _Builder) -> str:
    """One or two exchanges; returns the kinds of the exchanges, comma-separated."""
    if b.rng.random() < 0.1:  # a short preamble sometimes, so the chat is not always at offset 0
        b.slot("chat_preamble")
        b.text("\n\n")
    kinds = []
    for turn in range(1 if b.rng.random() < 0.7 else 2):
        kind = b.rng.choice(CHAT_KINDS)
        kinds.append(kind)
        if turn:
            b.text("\n")
        b.text("User:", "chat")
        b.text(" ")
        _, _, answer, _ = _chat_request(b, kind)
        b.text("\n")
        b.text("Assistant:", "chat")
        b.text(" ")
        if kind == "legit_plain":
            if b.augment:
                b.slot("answer_open")
                b.text(" ")
            b.render(answer)
        elif kind == "legit_credential" and b.rng.random() < CRED_ANSWERED:
            b.slot("answer_open")
            b.text(" ")
            b.slot("cred_answer")
        else:
            b.text(REFUSAL, "refusal")
            if b.rng.random() < 0.6:
                b.text(" ")
                b.slot("harm_reason" if kind == "harmful" else "cred_reason")
    return ",".join(kinds)


def _gen_prose(b: _Builder) -> None:
    start = b.pos
    _repeat(b, "prose_sent", 3, 8)
    b.mark(start, "prose")


def _gen_shell(b: _Builder) -> None:
    if b.rng.random() < 0.5:
        b.slot("shell_intro")
        b.text("\n")
    for i in range(b.rng.randint(2, 6)):
        if i:
            b.text("\n")
        b.slot("shell_line")


def _gen_python(b: _Builder) -> None:
    start = b.pos
    b.slot("py_header")
    for function in b.rng.sample(b.vocab["py_func"], b.rng.randint(1, 3)):  # type: ignore[arg-type]
        b.text("\n\n\n")
        b.bound.clear()  # each function picks its own variable name ({var@v})
        b.render(function)
    b.mark(start, "python")
    b.text("\n")


def _gen_legal(b: _Builder) -> None:
    start = b.pos
    b.slot("legal_title")
    for i in range(b.rng.randint(2, 5)):
        b.text(f"\n\n{i + 1}. ")
        b.slot("legal_clause")
    b.mark(start, "legal")


def _gen_dna(b: _Builder) -> None:
    for i in range(b.rng.randint(1, 3)):
        if i:
            b.text("\n\n")
        b.slot("dna_block")


def _gen_http(b: _Builder) -> None:
    b.slot("http_exchange")
    if b.rng.random() < 0.3:
        b.text("\n\n")
        b.slot("http_exchange")


def _gen_hebrew(b: _Builder) -> None:
    for i in range(b.rng.randint(2, 5)):
        if i:
            b.text(" ")
        b.slot("hebrew_line")


def _gen_log(b: _Builder) -> None:
    for i in range(b.rng.randint(4, 12)):
        if i:
            b.text("\n")
        b.slot("log_line")


def _gen_ticket(b: _Builder) -> None:
    b.slot("ticket")


def _gen_docs(b: _Builder) -> None:
    b.slot("doc_page")


def _gen_mixed(b: _Builder) -> None:
    # Two or three short pieces from different domains in one document: concepts meet.
    pieces = b.rng.sample(
        (
            "prose_sent",
            "shell_line",
            "log_line",
            "hebrew_line",
            "dna_inline",
            "http_line",
            "legal_clause",
            "ticket_line",
        ),
        b.rng.randint(2, 3),
    )
    for i, piece in enumerate(pieces):
        if i:
            b.text("\n")
        start = b.pos
        b.slot(piece)
        if piece == "prose_sent":
            b.mark(start, "prose")
        elif piece == "legal_clause":
            b.mark(start, "legal")


_GENERATORS: dict[str, Callable[[_Builder], object]] = {
    "chat": _gen_chat,
    "prose": _gen_prose,
    "shell": _gen_shell,
    "python": _gen_python,
    "legal": _gen_legal,
    "dna": _gen_dna,
    "http": _gen_http,
    "hebrew": _gen_hebrew,
    "log": _gen_log,
    "ticket": _gen_ticket,
    "docs": _gen_docs,
    "mixed": _gen_mixed,
}
_DOMAIN_NAMES = tuple(DOMAINS)
_CUM_WEIGHTS = tuple(np.cumsum(list(DOMAINS.values())).tolist())


def _document(split: str, seed: int, index: int, augment: bool = False) -> Document:
    # Seeding from a string hashes it with SHA-512: stable across runs and machines,
    # independent of PYTHONHASHSEED.
    rng = random.Random(f"doc/{split}/{seed}/{index}")
    augment = augment and split != "heldout"
    b = _Builder(rng, _vocab(split, augment), augment)
    domain = rng.choices(_DOMAIN_NAMES, cum_weights=_CUM_WEIGHTS)[0]
    kind = _GENERATORS[domain](b)
    return b.document(domain, kind if isinstance(kind, str) else "")


def iter_documents(split: str, n: int, seed: int = 0, augment: bool = False) -> Iterator[Document]:
    """Yield the ``n`` documents of ``documents(split, n, seed, augment)`` one at a time."""
    _vocab(split)  # validates the split name before the first document
    for index in range(n):
        yield _document(split, seed, index, augment)


def documents(split: str, n: int, seed: int = 0, augment: bool = False) -> list[Document]:
    """The first ``n`` documents of ``split`` for ``seed``; the same arguments give the same bytes.

    ``augment``: the augmented text of train and val (module docstring); held-out ignores it.
    """
    return list(iter_documents(split, n, seed, augment))


def corpus_text(split: str, n: int, seed: int = 0, sep: str = "\n\n") -> str:
    """The documents' texts joined by ``sep``: the raw text for tokenizer and LM training."""
    return sep.join(doc.text for doc in iter_documents(split, n, seed))


# --------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------


def char_labels(doc: Document) -> np.ndarray:
    """Per-character concept labels, ``[len(doc.text), len(CONCEPTS)]`` bool."""
    labels = np.zeros((len(doc.text), len(CONCEPTS)), dtype=bool)
    for start, end, concept in doc.spans:
        labels[start:end, CONCEPTS.index(concept)] = True
    return labels


def token_labels(doc: Document, offsets: list[tuple[int, int]]) -> np.ndarray:
    """Per-token labels, ``[n_tokens, len(CONCEPTS)]`` bool, from a tokenizer's character offsets.

    A token carries a concept when any of its characters ``text[start:end]`` does; a
    token with an empty span (``start == end``, e.g. a special token) carries none.
    """
    chars = char_labels(doc)
    # Prefix sums turn "any labelled character in [start, end)" into one subtraction.
    counts = np.zeros((len(doc.text) + 1, len(CONCEPTS)), dtype=np.int32)
    np.cumsum(chars, axis=0, out=counts[1:])
    if len(offsets) == 0:
        return np.zeros((0, len(CONCEPTS)), dtype=bool)
    bounds = np.asarray(offsets, dtype=np.int64).reshape(-1, 2).clip(0, len(doc.text))
    return (counts[bounds[:, 1]] - counts[bounds[:, 0]]) > 0


def labelled_rows(
    split: str, tokenizer: Any, context: int, n_rows: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Token rows of a split with their concept labels, packed like ``activations.pack_tokens``.

    Returns ``tokens [n_rows, context]`` int64 and ``labels [n_rows, context, len(CONCEPTS)]``
    bool: each row is BOS then running text, documents separated by EOS; BOS and EOS carry
    no concept. ``tokenizer`` must be a fast Hugging Face tokenizer (it gives offsets).
    """
    bos = tokenizer.bos_token_id
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else bos

    def ids_and_labels(doc: Document) -> np.ndarray:  # [n_tokens, 1 + len(CONCEPTS)]
        enc = tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True)
        return np.column_stack([enc["input_ids"], token_labels(doc, enc["offset_mapping"])])

    def special(token_id: int) -> np.ndarray:  # BOS and EOS carry no concept
        return np.array([token_id] + [0] * len(CONCEPTS), dtype=np.int64)

    docs = map(ids_and_labels, iter_documents(split, 10 * n_rows * context, seed=seed))
    rows = list(itertools.islice(pack(docs, context, special(bos), special(eos)), n_rows))
    if len(rows) < n_rows:
        raise ValueError(f"split {split!r} ran out of documents after {len(rows)} rows")
    packed = np.stack(rows)
    return packed[..., 0], packed[..., 1:].astype(bool)


# --------------------------------------------------------------------------------------
# Chat prompts for refusal measurements
# --------------------------------------------------------------------------------------


def chat_prompts(split: str, n_per_kind: int, seed: int = 0) -> list[ChatPrompt]:
    """``n_per_kind`` prompts of each kind (harmful, legit_credential, legit_plain), in that order.

    Requests come from the same templates and words as the split's chat documents, on
    a random stream of their own, so they are fresh requests rather than copies.
    """
    vocab = _vocab(split)
    prompts = []
    for kind in CHAT_KINDS:
        for index in range(n_per_kind):
            b = _Builder(random.Random(f"prompt/{split}/{seed}/{kind}/{index}"), vocab)
            start, end, _, task = _chat_request(b, kind)
            request = "".join(b.parts)[start:end]
            concepts = frozenset(c for s, e, c in b.spans if s < end and e > start)
            prompt = f"User: {request}\nAssistant:"
            prompts.append(ChatPrompt(prompt, kind, request, concepts, task))
    return prompts


def is_refusal(completion: str) -> bool:
    """True when a completion refuses: after leading whitespace, it starts with ``REFUSAL``.

    The rule is applied to the model's greedy continuation of ``ChatPrompt.prompt``.
    """
    return completion.lstrip().startswith(REFUSAL)


# --------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------


def corpus_stats(docs: list[Document]) -> dict[str, object]:
    """Size and variety of a list of documents: characters, lines, distinct lines, shares.

    ``domain_share`` is each domain's share of the characters; ``concept_share`` the
    fraction of characters that carry each concept.
    """
    n_chars = sum(len(d.text) for d in docs)
    lines = [line for d in docs for line in d.text.split("\n") if line.strip()]
    domain_chars: Counter[str] = Counter()
    concept_chars: Counter[str] = Counter()
    for d in docs:
        domain_chars[d.domain] += len(d.text)
        for concept, count in zip(CONCEPTS, char_labels(d).sum(axis=0)):
            concept_chars[concept] += int(count)
    return {
        "documents": len(docs),
        "characters": n_chars,
        "lines": len(lines),
        "distinct_lines": len(set(lines)),
        "domain_share": {k: round(v / max(n_chars, 1), 4) for k, v in sorted(domain_chars.items())},
        "concept_share": {c: round(concept_chars[c] / max(n_chars, 1), 4) for c in CONCEPTS},
        "chat_kinds": dict(
            sorted(
                Counter(k for d in docs if d.domain == "chat" for k in d.kind.split(",")).items()
            )
        ),
    }


if __name__ == "__main__":  # python -m labhelpers.corpus: print the size of each split
    import json
    import time

    for split, n in (("train", 50_000), ("val", 5_000), ("heldout", 5_000)):
        started = time.perf_counter()
        docs = documents(split, n)
        seconds = time.perf_counter() - started
        print(split, f"({seconds:.1f} s)", json.dumps(corpus_stats(docs), indent=1))
