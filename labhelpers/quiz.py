"""Check your understanding: ten multiple-choice questions on the course's ideas.

Each ``Question`` names the notebook that measured its answer, and its explanation says
why the right option is right and what the tempting wrong one gets wrong. Two ways in:

* ``show()`` in Jupyter: a radio button per question and a button that scores them;
* ``grade(["b", "d", ...])`` anywhere: one letter per question, a printed report and the
  score. A classroom copy can collect the letters; a viewer without widgets can use it too.

``PASS_MARK`` is 75%, the source lesson's bar for completing it.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

PASS_MARK = 0.75
LETTERS = "abcd"


@dataclass(frozen=True)
class Question:
    """One question: ``options[answer]`` is right; ``why`` explains; ``notebook`` taught it."""

    prompt: str
    options: tuple[str, ...]
    answer: int
    why: str
    notebook: str


QUESTIONS: tuple[Question, ...] = (
    Question(
        "A toy model must store 5 features in 2 hidden dimensions. Each feature is active in "
        "only a few percent of inputs. What does it learn?",
        (
            "Only the 2 most important features, one per dimension; the other 3 are dropped.",
            "All 5, as directions at angles to each other (a pentagon), accepting some "
            "interference.",
            "All 5, each along its own hidden dimension after an extra orthogonal rotation.",
            "Nothing stable: with more features than dimensions the loss cannot decrease.",
        ),
        1,
        "Sparse features rarely fire together, so the interference of non-orthogonal "
        "directions seldom costs anything. That is superposition. Dense features would "
        "interfere all the time, and the model keeps only the most important ones.",
        "01_superposition",
    ),
    Question(
        "Why can one neuron respond to 'rotate the API key', 'shell syntax' and 'urgent tone'?",
        (
            "The neuron is broken: training failed to specialise it.",
            "The three concepts are the same feature to the model.",
            "Features stored in superposition are not aligned with the neuron basis, so "
            "one neuron reads parts of several feature directions.",
            "Attention copies unrelated tokens into the neuron's position.",
        ),
        2,
        "With more features than neurons, feature directions are spread across neurons; "
        "a neuron's activation mixes every feature direction it overlaps. The SAE looks for "
        "a basis in which the features are separate again.",
        "01_superposition",
    ),
    Question(
        "You raise the L1 coefficient of a ReLU SAE. What do you expect?",
        (
            "Fewer active latents per token, worse reconstruction, and active latents that "
            "shrink below the size the reconstruction needs.",
            "More active latents and better reconstruction.",
            "No change in L0: the L1 penalty only rescales the decoder columns.",
            "Fewer dead latents, because every latent is pushed to fire.",
        ),
        0,
        "L1 trades reconstruction for sparsity and also pulls the magnitudes of active "
        "latents toward zero (shrinkage). TopK, JumpReLU and Gated SAEs choose *which* "
        "latents fire separately from *how much*, which removes most of the shrinkage.",
        "03_torch_sae",
    ),
    Question(
        "An SAE trained on synthetic data with known features reconstructs it with low error, "
        "but its decoder columns barely align with the true features. What follows?",
        (
            "The true features must be wrong.",
            "The alignment metric is broken, since low error implies recovery.",
            "Train longer: low error always ends in recovery.",
            "Reconstruction is not recovery: a dictionary can reconstruct well without "
            "finding the directions that generated the data.",
        ),
        3,
        "Many dictionaries reconstruct the same data. Only ground truth tells whether the "
        "learned one is the generating one; on a language model, where there is none, "
        "labels must be tested on held-out text and by interventions instead.",
        "02_numpy_sae",
    ),
    Question(
        "An SAE reconstructs the residual stream with FVU 0.05. Why also measure the "
        "next-token loss with the SAE spliced into the model?",
        (
            "FVU is undefined for residual streams.",
            "A small error in norm can still point along directions the later layers "
            "use, and hurt predictions more than its size suggests.",
            "The spliced loss is cheaper to compute than the FVU.",
            "To check that the SAE's dead latents are really dead.",
        ),
        1,
        "The model does not care about squared error; it cares about what the later layers "
        "read. CE-loss recovered and the KL to the clean model measure the error where it "
        "matters.",
        "04_sae_on_gpt2",
    ),
    Question(
        "The 20 strongest examples of latent 247 are all about credentials. What should you "
        "do before calling it a credential feature?",
        (
            "Score the label on held-out text it never saw (precision and recall), look at "
            "examples across its activation range, and test it with interventions.",
            "Nothing: 20 of 20 is conclusive.",
            "Check that its decoder norm is 1.",
            "Look at the next 20 strongest examples.",
        ),
        0,
        "Top examples select for the label you already have in mind. In notebook 05 every "
        "candidate's label failed on held-out text at the 0.8 precision bar, although the "
        "top examples looked convincing.",
        "05_interpreting_features",
    ),
    Question(
        "Steering along a feature's direction raises the refusal rate. Which control makes "
        "this evidence that the *feature* matters?",
        (
            "Repeat the same sweep with the same direction and check that it gives the same "
            "numbers.",
            "Steer with a larger alpha until the effect is obvious.",
            "Steer at every layer at once.",
            "The same sweep along directions of equal norm (random ones and unrelated "
            "features): the rise must be far larger than theirs.",
        ),
        3,
        "A push of that size along almost any direction disturbs a small model. Only a "
        "comparison against directions of equal norm separates the feature's effect from "
        "disturbance, and several draws of the control show its spread.",
        "06_steering_sweeps",
    ),
    Question(
        "Why keep the SAE's error term (x - x_hat) when ablating one of its features?",
        (
            "It makes the forward pass faster.",
            "It is required for gradients to flow.",
            "So that the only change is the feature: splicing the SAE in without it changes "
            "the model by the reconstruction error too.",
            "It keeps the feature's decoder direction normalised.",
        ),
        2,
        "With the error term kept, ablating no features reproduces the clean model exactly, "
        "so any change comes from the features removed. Without it, every ablation also "
        "carries the SAE's reconstruction error.",
        "07_ablation_and_circuits",
    ),
    Question(
        "Attribution patching estimates every feature's ablation effect from one backward "
        "pass. When is the estimate least trustworthy?",
        (
            "For the largest effects, where the metric is far from linear in the feature "
            "(saturation, thresholds), so a first-order estimate misses them.",
            "For features with small effects.",
            "When the metric is a logit difference.",
            "Never: the gradient is exact.",
        ),
        0,
        "The gradient is exact at the clean point only. Removing a large feature moves far "
        "from it. Integrated gradients, which average the gradient along the path, repair "
        "much of that, and real ablations settle it.",
        "07_ablation_and_circuits",
    ),
    Question(
        "An attribution graph's edges add up exactly to each node's value. Why must its "
        "claims still be tested by ablating latents in the real model?",
        (
            "They need not: exact edges are causal effects.",
            "Because the edges are rounded when the graph is pruned.",
            "The graph is exact for a replacement model, with transcoders in place of the "
            "MLPs and attention patterns held fixed; in the real model, attention responds "
            "to an ablation.",
            "Because the graph ignores the token embeddings.",
        ),
        2,
        "In notebook 07 the graph's predictions follow real ablations closely with "
        "attention and LayerNorm held, and much less well when they are free. The graph "
        "is a hypothesis about the model, and ablations test it.",
        "07_ablation_and_circuits",
    ),
)


def _letters(answers: Sequence[str | None], questions: Sequence[Question]) -> list[int | None]:
    """Option indices of ``answers`` (letters, or None for unanswered); clear errors otherwise."""
    if isinstance(answers, str):
        raise TypeError("answers must be a list with one letter per question, e.g. ['a', 'c']")
    if len(answers) != len(questions):
        raise ValueError(f"{len(answers)} answers for {len(questions)} questions")
    picked: list[int | None] = []
    for i, (letter, question) in enumerate(zip(answers, questions), start=1):
        if letter is None:
            picked.append(None)
            continue
        valid = LETTERS[: len(question.options)]
        if not isinstance(letter, str) or letter.strip().lower() not in valid:
            raise ValueError(f"question {i}: {letter!r} is not one of {list(valid)}")
        picked.append(valid.index(letter.strip().lower()))
    return picked


def score(answers: Sequence[str | None], questions: Sequence[Question] = QUESTIONS) -> float:
    """The share of ``questions`` answered right; ``answers`` holds one letter (or None) each."""
    picked = _letters(answers, questions)
    return sum(p == q.answer for p, q in zip(picked, questions)) / len(questions)


def report(answers: Sequence[str | None], questions: Sequence[Question] = QUESTIONS) -> str:
    """A plain-text report: the score, and for each question missed, the answer and why."""
    picked = _letters(answers, questions)
    lines = []
    for i, (p, q) in enumerate(zip(picked, questions), start=1):
        if p == q.answer:
            continue
        given = "unanswered" if p is None else f"you chose {LETTERS[p]}"
        lines.append(
            f"{i}. {given}; the answer is {LETTERS[q.answer]}) {q.options[q.answer]}\n"
            f"   Why: {q.why} (notebook {q.notebook})"
        )
    right = score(answers, questions)
    verdict = "passed" if right >= PASS_MARK else f"not yet: the pass mark is {PASS_MARK:.0%}"
    head = f"{round(right * len(questions))}/{len(questions)} right ({right:.0%}): {verdict}"
    return "\n".join([head, *lines])


def grade(answers: Sequence[str | None], questions: Sequence[Question] = QUESTIONS) -> float:
    """Print ``report`` and return the score."""
    print(report(answers, questions))
    return score(answers, questions)


def questions_text(questions: Sequence[Question] = QUESTIONS) -> str:
    """The questions and their lettered options, as plain text."""
    blocks = []
    for i, q in enumerate(questions, start=1):
        options = "\n".join(f"   {LETTERS[j]}) {o}" for j, o in enumerate(q.options))
        blocks.append(f"{i}. {q.prompt}\n{options}")
    return "\n\n".join(blocks)


def questions_html(questions: Sequence[Question] = QUESTIONS) -> str:
    """The questions and their lettered options, as HTML (what a viewer without widgets shows)."""
    items = []
    for q in questions:
        options = "".join(
            f"<li><b>{LETTERS[j]})</b> {html.escape(o)}</li>" for j, o in enumerate(q.options)
        )
        items.append(
            f"<li><p>{html.escape(q.prompt)}</p><ul style='list-style:none'>{options}</ul></li>"
        )
    return f"<ol>{''.join(items)}</ol>"


class Quiz:
    """The questions as radio buttons, and a button that scores them.

    ``widget`` is the ipywidgets box. Like ``widgets.FeatureBrowser``, displaying it sends a
    static HTML copy of the questions as well, for viewers that cannot draw widgets.
    """

    def __init__(self, questions: Sequence[Question] = QUESTIONS) -> None:
        import ipywidgets

        self.questions = list(questions)
        self.choices = [
            ipywidgets.RadioButtons(
                options=[(f"{LETTERS[j]}) {o}", LETTERS[j]) for j, o in enumerate(q.options)],
                value=None,
                layout=ipywidgets.Layout(width="auto"),
            )
            for q in self.questions
        ]
        self.button = ipywidgets.Button(description="Check my answers")
        self.result = ipywidgets.HTML()
        self.button.on_click(lambda _: self.check())
        rows = []
        for i, (q, choice) in enumerate(zip(self.questions, self.choices), start=1):
            rows += [ipywidgets.HTML(f"<p><b>{i}.</b> {html.escape(q.prompt)}</p>"), choice]
        self.widget = ipywidgets.VBox([*rows, self.button, self.result])

    def answers(self) -> list[str | None]:
        """The letters chosen so far (None where nothing is chosen)."""
        return [choice.value for choice in self.choices]

    def check(self) -> float:
        """Score the chosen answers and show the report below the button."""
        text = report(self.answers(), self.questions)
        self.result.value = f"<pre style='white-space:pre-wrap'>{html.escape(text)}</pre>"
        return score(self.answers(), self.questions)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/html"] = questions_html(self.questions)
        return bundle


def show(questions: Sequence[Question] = QUESTIONS, static: bool | None = None) -> Quiz | None:
    """The quiz: a ``Quiz`` widget inside Jupyter, the questions as text elsewhere.

    ``static=None`` decides as ``widgets.browse`` does; ``static=True`` prints the questions
    (answer them with ``grade``); ``static=False`` forces the widget.
    """
    from labhelpers.widgets import can_draw

    if static is None:
        static = not can_draw()
    if not static:
        return Quiz(questions)
    print(questions_text(questions))
    return None
