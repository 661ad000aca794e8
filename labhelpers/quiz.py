"""Check your understanding: ten multiple-choice questions on the course's ideas.

Each ``Question`` names the notebook to go back to, and its explanation says
why the right option is right and what the tempting wrong one gets wrong. Two ways in:

* ``show()`` in Jupyter: a radio button per question and a button that scores them
  (``Quiz.answers()`` returns the letters chosen, for ``grade``);
* ``grade(["b", "d", ...])`` anywhere: one letter per question, a printed report and the
  score. A classroom copy can collect the letters; a viewer without widgets can use it too.

``PASS_MARK`` is 75%: with ten questions, 8 right pass and 7 do not.
"""

from __future__ import annotations

import html
import math
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
        "A toy model must store 5 features in 2 hidden dimensions. Each feature is active "
        "in only a few percent of inputs. What does it learn?",
        (
            "Only the 2 most important features, each on its own orthogonal direction, since "
            "any overlap would add interference to the loss.",
            "All 5, as directions at angles to each other (a pentagon), accepting some "
            "interference.",
            "All 5 along one shared direction, told apart only by how strongly each one "
            "activates it.",
            "Nothing stable: with more features than dimensions, training keeps swapping which "
            "features it represents.",
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
            "The neuron is broken: training failed to specialise it, and a longer run would "
            "split it into three clean, separate neurons.",
            "The model treats all three as one concept, since they often appear together in the "
            "requests it was trained on.",
            "Features stored in superposition are not aligned with the neuron basis, so one "
            "neuron reads parts of several feature directions.",
            "Attention copies tokens of unrelated earlier requests into the position, and the "
            "neuron responds to those copies.",
        ),
        2,
        "With more features than neurons, feature directions are spread across neurons; a "
        "neuron's activation mixes every feature direction it overlaps. The SAE looks for a "
        "basis in which the features are separate again.",
        "01_superposition",
    ),
    Question(
        "You raise the L1 coefficient of a ReLU SAE. What do you expect?",
        (
            "Fewer active latents, worse reconstruction, and active latents shrunk below the "
            "size the reconstruction needs.",
            "More active latents, each with a smaller value, because the penalty prefers "
            "spreading activation over many latents.",
            "No change in L0 or reconstruction: the decoder rows grow to undo the penalty, "
            "since nothing fixes their norms.",
            "Fewer dead latents, because the stronger penalty pushes every latent to fire a "
            "little on every token.",
        ),
        0,
        "L1 trades reconstruction for sparsity and also pulls the magnitudes of active "
        "latents toward zero (shrinkage). Growing the decoder does not dodge it: the course's "
        "ReLU SAE weights each latent's penalty by its decoder row's norm. JumpReLU and "
        "Gated SAEs decide which latents fire apart from how strongly they fire. TopK picks "
        "latents by the same pre-activation it outputs; it avoids shrinkage because no loss "
        "penalises magnitudes: k alone sets the sparsity (Gao et al., 2024).",
        "03_torch_sae",
    ),
    Question(
        "An SAE trained on synthetic data with known features reconstructs it with low "
        "error, but its decoder rows barely align with the true features. What follows?",
        (
            "The synthetic features were generated wrong: a correct generator is recovered by "
            "any SAE that reconstructs its data well.",
            "The alignment metric is broken: low reconstruction error on this data implies that "
            "the true directions were recovered.",
            "Train longer: once the reconstruction error is low enough, the decoder rows "
            "always rotate onto the true features.",
            "Reconstruction is not recovery: a dictionary can reconstruct well without finding "
            "the generating directions.",
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
            "FVU is not defined for residual streams, whose activations have no fixed mean, so "
            "only the spliced loss means anything.",
            "FVU gives the error's size, not its cost, which depends on how much of it lies "
            "along directions later layers read.",
            "The spliced loss is cheaper: one forward pass, where FVU needs the variance of "
            "every dimension of the activations.",
            "To find the dead latents: a latent that never fires leaves the spliced loss "
            "unchanged, which FVU cannot show.",
        ),
        1,
        "FVU counts every direction of the error alike; the model's predictions depend only "
        "on what the later layers read. So measure the cost itself, with the SAE spliced in: "
        "notebook 04's TopK SAE has FVU 0.035, CE-loss recovered 0.996 and KL to the clean "
        "model 0.023.",
        "04_sae_on_gpt2",
    ),
    Question(
        "The 20 strongest examples of latent 214 are all about credentials. What should you "
        "do before calling it a credential feature?",
        (
            "Score the label on held-out text it never saw (precision, recall), read examples "
            "across its activation range, and intervene.",
            "Nothing more: twenty of twenty strongest examples agreeing is strong evidence, and "
            "weaker examples are mostly noise anyway.",
            "Check that its decoder row has unit norm and that it is not a dead latent, so "
            "that its top examples can be trusted.",
            "Read its next hundred strongest examples, and accept the label if at least ninety "
            "of them are about credentials too.",
        ),
        0,
        "Top examples select for the label you already have in mind, and so do more of "
        "them. In notebook 05 latent 214's top 20 were 100% credentials, yet on held-out "
        "text only part of its strong activations were (precision 0.68), and the label was "
        "rejected; they covered few of the concept's tokens anyway (recall 0.04). In notebook "
        "06, steering against a feature that fires with credentials lowered harmful refusals "
        "too, and notebook 07's ablation kept them only once features that fire on harm were "
        "left out of the choice: firing with credentials is not 'a credential is mentioned'.",
        "05_interpreting_features",
    ),
    Question(
        "Steering along a feature's direction raises the refusal rate. Which control makes "
        "this evidence that the feature itself matters?",
        (
            "Repeat the sweep with the same direction on the same prompts, and check that it "
            "gives the same refusal rates each time.",
            "Steer with a much larger alpha until the effect is obvious, so that it cannot be "
            "mistaken for noise in the refusal rate.",
            "Steer along the same direction at every layer, and check that the refusal rate "
            "rises at each of them as well.",
            "The same sweep along directions of equal norm (random ones, unrelated features): "
            "the rise must far exceed theirs.",
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
            "It makes the forward pass faster, because the SAE then only needs to decode the "
            "features that are not ablated.",
            "Without it no gradient flows through the SAE, so attribution patching and "
            "integrated gradients would both fail.",
            "So that the only change is the feature: splicing the SAE in without it changes the "
            "model by the reconstruction error too.",
            "It keeps every decoder direction at unit norm, which ablating a feature would "
            "otherwise change along with the feature.",
        ),
        2,
        "With the error term kept, ablating no features reproduces the clean model's logits "
        "(to float rounding; tests/test_splice.py checks it), so any change comes from the "
        "features removed. Without it, every ablation also carries the SAE's reconstruction "
        "error.",
        "07_ablation_and_circuits",
    ),
    Question(
        "Attribution patching estimates every feature's ablation effect from one backward "
        "pass. When is the estimate least trustworthy?",
        (
            "For the largest effects, where the metric is far from linear in the feature "
            "(saturation, thresholds).",
            "For the smallest effects, because rounding errors in the backward pass swamp a "
            "gradient that is close to zero.",
            "When the metric is a logit difference rather than a probability, since logits are "
            "unbounded and gradients explode.",
            "Never: the gradient is exact, so gradient times activation difference equals every "
            "feature's real ablation effect.",
        ),
        0,
        "The gradient is exact at the clean point only, and removing a large feature moves "
        "far from it. Integrated gradients, which average the gradient along the path, "
        "repair much of that, and real ablations settle it.",
        "07_ablation_and_circuits",
    ),
    Question(
        "An attribution graph's edges add up exactly to each node's value. Why must its "
        "claims still be tested by ablating latents in the real model?",
        (
            "They need not: every edge is an exact contribution, so each edge is already a "
            "causal effect in the original model.",
            "Pruning rounds the edges, and can drop paths whose rounded weights looked small "
            "but whose sum was large.",
            "It is exact for a replacement model (transcoders for the MLPs, attention held "
            "fixed); the real model's attention responds.",
            "The graph leaves out the token embeddings, so every path that starts at a token is "
            "missing from its edges.",
        ),
        2,
        "In notebook 07 the graph's predictions follow real ablations closely with "
        "attention and LayerNorm held, and less well when they are free. The graph is "
        "a hypothesis about the model, and ablations test it.",
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


def _share_right(picked: Sequence[int | None], questions: Sequence[Question]) -> float:
    return sum(p == q.answer for p, q in zip(picked, questions)) / len(questions)


def score(answers: Sequence[str | None], questions: Sequence[Question] = QUESTIONS) -> float:
    """The share of ``questions`` answered right; ``answers`` holds one letter (or None) each."""
    return _share_right(_letters(answers, questions), questions)


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
    right = _share_right(picked, questions)
    needed = math.ceil(PASS_MARK * len(questions))
    verdict = (
        "passed"
        if right >= PASS_MARK
        else f"not yet: you pass with {needed} of {len(questions)} (a pass mark of {PASS_MARK:.0%})"
    )
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
