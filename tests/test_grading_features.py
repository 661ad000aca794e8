"""Each notebook-05 check passes the reference, flags a stub, and names each mistake."""

import numpy as np
import pytest
from grading_contract import contract_tests

from labhelpers.grading import features as checks

CHECKS = {
    checks.check_top_k_examples: (
        checks._top_k,
        [
            checks._top_k_weakest,
            checks._top_k_divmod_rows,
            checks._top_k_with_zeros,
            checks._top_k_per_row,
        ],
        [
            "returning the weakest activations",
            "unflattening with the number of rows",
            "including tokens where the feature does not fire",
            "one example per row",
        ],
    ),
    checks.check_precision_recall: (
        checks._precision_recall,
        [checks._pr_swapped, checks._pr_over_all_tokens, checks._pr_mean_f1, checks._pr_accuracy],
        [
            "precision and recall swapped",
            "dividing by all tokens",
            "F1 as the arithmetic mean",
            "accuracy in place of F1",
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
