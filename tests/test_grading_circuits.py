"""Each notebook-07 check passes the reference, flags a stub, and names each mistake."""

import numpy as np
import pytest
import torch
from grading_contract import contract_tests

from labhelpers.grading import circuits as checks

CHECKS = {
    checks.check_attribution_estimate: (
        checks._attribution,
        [
            checks._flipped,
            checks._averaged,
            checks._gradient_only,
            checks._patch_ignored,
            lambda g, z, p: torch.einsum("bpd,bpd->d", g, z) - g.sum(0).sum(0) * p,
        ],
        [
            "a flipped sign",
            "averaging over tokens instead of summing",
            "the gradient alone",
            "ignoring the patch value",
            "the gradient summed before the patch is applied",
        ],
    ),
    checks.check_faithfulness_score: (
        checks._faithfulness,
        [
            checks._plain_ratio,
            checks._lost_share,
            checks._over_full,
            lambda c, e, f: (f - e) / (c - e),
            lambda c, e, f: float(np.clip((c - e) / (f - e), 0, 1)),
        ],
        [
            "a plain ratio m(C) / m(M)",
            "the share the circuit misses",
            "dividing by m(M)",
            "the ratio upside down",
            "a score clipped to [0, 1]",
        ],
    ),
}


test_passes_on_reference, test_stub_is_not_implemented, test_names_each_mistake = contract_tests(
    CHECKS
)


def test_an_unknown_wrong_answer_shows_expected_and_got():
    with pytest.raises(AssertionError, match="wrong answer"):
        checks.check_attribution_estimate(lambda grad_z, z_clean, z_patched: 0 * z_patched)
    with pytest.raises(AssertionError, match="wrong answer"):
        checks.check_faithfulness_score(lambda m_circuit, m_empty, m_full: m_circuit + 1.0)


def test_a_torch_or_numpy_scalar_passes_the_faithfulness_check(capsys):
    checks.check_faithfulness_score(
        lambda c, e, f: torch.tensor((c - e) / (f - e), dtype=torch.float64)
    )
    assert "passed" in capsys.readouterr().out


def test_a_function_that_edits_its_input_in_place_is_caught():
    def in_place(grad_z, z_clean, z_patched):
        z_clean -= z_patched
        return (grad_z * z_clean).sum(dim=(0, 1))

    with pytest.raises(AssertionError, match="in place"):
        checks.check_attribution_estimate(in_place)


def test_right_answers_written_other_ways_pass(capsys):
    """einsum and a NumPy result for the estimate; 1 - the lost share for faithfulness."""
    checks.check_attribution_estimate(lambda g, z, p: torch.einsum("bpd,bpd->d", g, z - p))
    checks.check_attribution_estimate(lambda g, z, p: (g * (z - p)).flatten(0, 1).sum(0).numpy())
    checks.check_faithfulness_score(lambda c, e, f: 1 - (f - c) / (f - e))
    assert capsys.readouterr().out.count("passed") == 3
