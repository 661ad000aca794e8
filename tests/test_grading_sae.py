"""Each notebook-03 check passes the reference, flags a stub, and names each mistake."""

import pytest
from grading_contract import contract_tests

from labhelpers.grading import sae as checks

CHECKS = {
    checks.check_relu_sae_forward: (
        checks._relu_forward,
        [checks._no_relu, checks._no_b_dec_in, checks._enc_transposed, checks._decode_with_W_enc],
        [
            "a missing ReLU",
            "forgetting to subtract b_dec",
            "a transposed encoder",
            "decoding with W_enc.T",
        ],
    ),
    checks.check_relu_sae_loss: (
        checks._relu_loss,
        [
            checks._loss_no_norms,
            checks._loss_norm_axis,
            checks._loss_mse_mean,
            checks._loss_batch_sum,
        ],
        [
            "an L1 penalty without the decoder norms",
            "decoder norms over the wrong axis",
            "an MSE averaged over d_in",
            "a loss summed over the batch",
        ],
    ),
    checks.check_topk_activation: (
        checks._topk,
        [checks._topk_wrong_dim, checks._topk_no_relu, checks._topk_smallest, checks._topk_abs],
        [
            "top-k over the wrong dimension",
            "a missing ReLU",
            "keeping the k smallest",
            "ranking by |pre|",
        ],
    ),
    checks.check_normalize_decoder_rows: (
        checks._normalize_rows,
        [
            lambda W: W / W.norm(dim=0, keepdim=True),
            lambda W: W,
            lambda W: W / W.pow(2).sum(1, keepdim=True),
        ],
        [
            "normalising columns instead of rows",
            "forgetting the decoder-norm constraint",
            "dividing by the squared norm",
        ],
    ),
}


test_passes_on_reference, test_stub_is_not_implemented, test_names_each_mistake = contract_tests(
    CHECKS
)


def test_an_unknown_wrong_answer_shows_expected_and_got():
    with pytest.raises(AssertionError, match="wrong answer"):
        checks.check_topk_activation(lambda pre, k: pre * 0)
