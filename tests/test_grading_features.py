"""Each notebook-05 check passes the reference, flags a stub, and names each mistake."""

import numpy as np
import pytest
from grading_contract import contract_tests

from labhelpers.grading import features as checks


def _top_k_loop(acts, k):
    """top-k examples written as a plain loop over every token."""
    firing = [
        (r, p, float(acts[r, p]))
        for r in range(acts.shape[0])
        for p in range(acts.shape[1])
        if acts[r, p] > 0
    ]
    return sorted(firing, key=lambda t: -t[2])[:k]


def _counts(fires, labels):
    tp = int(np.sum(fires & labels))
    return tp, int(fires.sum()), int(labels.sum())


def _pr_silent_precision_one(fires, labels):
    tp, fired, labelled = _counts(fires, labels)
    p = tp / fired if fired else 1.0  # scikit-learn's zero_division=1
    r = tp / labelled if labelled else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def _pr_agreements(fires, labels):
    agree, fired, labelled = int(np.sum(fires == labels)), int(fires.sum()), int(labels.sum())
    p, r = agree / max(fired, 1), agree / max(labelled, 1)
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


CHECKS = {
    checks.check_top_k_examples: (
        checks._top_k,
        [
            checks._top_k_weakest,
            checks._top_k_divmod_rows,
            checks._top_k_with_zeros,
            checks._top_k_per_row,
            lambda acts, k: [(p, r, v) for r, p, v in _top_k_loop(acts, k)],
        ],
        [
            "returning the weakest activations",
            "unflattening with the number of rows",
            "including tokens where the feature does not fire",
            "one example per row",
            "(position, row) instead of (row, position)",
        ],
    ),
    checks.check_precision_recall: (
        checks._precision_recall,
        [
            checks._pr_swapped,
            checks._pr_over_all_tokens,
            checks._pr_mean_f1,
            checks._pr_accuracy,
            _pr_silent_precision_one,
            _pr_agreements,
        ],
        [
            "precision and recall swapped",
            "dividing by all tokens",
            "F1 as the arithmetic mean",
            "accuracy in place of F1",
            "precision 1 for a detector that never fires",
            "true positives counted as agreements",
        ],
    ),
}


test_passes_on_reference, test_stub_is_not_implemented, test_names_each_mistake = contract_tests(
    CHECKS
)


def test_a_missing_zero_guard_reports_nan():
    def no_guard(fires, labels):
        tp = np.sum(fires & labels)
        precision, recall = tp / fires.sum(), tp / labels.sum()
        return precision, recall, 2 * precision * recall / (precision + recall)

    with np.errstate(invalid="ignore", divide="ignore"), pytest.raises(AssertionError, match="NaN"):
        checks.check_precision_recall(no_guard)


def test_an_equivalent_formula_passes(capsys):
    def via_counts(fires, labels):
        tp = int(np.sum(fires & labels))
        fp, fn = int(np.sum(fires & ~labels)), int(np.sum(~fires & labels))
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        return p, r, (2 * tp / (2 * tp + fp + fn) if tp else 0.0)

    checks.check_precision_recall(via_counts)
    assert "passed" in capsys.readouterr().out


def test_reference_agrees_with_metrics_precision_recall():
    from labhelpers import metrics

    fires, labels = checks._fires_labels(300, seed=5, p_fire=0.2, p_label=0.3)
    ours = metrics.precision_recall(fires, labels)
    assert checks._precision_recall(fires, labels) == pytest.approx(
        (ours["precision"], ours["recall"], ours["f1"])
    )


def test_right_answers_written_other_ways_pass(capsys):
    """A plain loop, NumPy's unravel_index, and a torch precision/recall."""
    import torch

    def unravel(acts, k):
        a = acts.numpy()
        rows, positions = np.unravel_index(np.argsort(-a, axis=None)[:k], a.shape)
        return [(r, p, a[r, p]) for r, p in zip(rows, positions) if a[r, p] > 0]

    def torch_pr(fires, labels):
        fires, labels = torch.tensor(fires), torch.tensor(labels)
        tp = (fires & labels).sum().float()
        p, r = tp / fires.sum().clamp_min(1), tp / labels.sum().clamp_min(1)
        return p, r, torch.nan_to_num(2 * p * r / (p + r))

    checks.check_top_k_examples(_top_k_loop)
    checks.check_top_k_examples(unravel)
    checks.check_precision_recall(torch_pr)
    assert capsys.readouterr().out.count("passed") == 3


def test_an_answer_that_is_not_numbers_is_reported_not_blamed_on_the_function():
    # The conversion to an array used to raise inside the check, which then said
    # "your function raised TypeError" about a function that had returned normally.
    def as_dict(fires, labels):
        return dict(zip(("precision", "recall", "f1"), checks._precision_recall(fires, labels)))

    with pytest.raises(AssertionError, match="got dict") as info:
        checks.check_precision_recall(as_dict)
    assert "raised" not in str(info.value)
    with pytest.raises(AssertionError, match="got None: does your function end with a `return`"):
        checks.check_top_k_examples(lambda acts, k: None)
