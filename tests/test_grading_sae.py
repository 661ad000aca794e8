"""Each notebook-03 check passes the reference, flags a stub, and names each mistake."""

import pytest
import torch
from grading_contract import contract_tests

from labhelpers.grading import sae as checks


def _forward(x, W_enc, b_enc, W_dec, b_dec):
    z = torch.relu((x - b_dec) @ W_enc + b_enc)
    return z @ W_dec + b_dec, z


def _batch_topk(pre, k):
    flat = pre.flatten()
    keep = flat >= flat.topk(k * pre.shape[0]).values[-1]
    return (flat * keep).relu().view_as(pre)


CHECKS = {
    checks.check_relu_sae_forward: (
        checks._relu_forward,
        [
            checks._no_relu,
            checks._no_b_dec_in,
            checks._enc_transposed,
            checks._decode_with_W_enc,
            lambda x, W_enc, b_enc, W_dec, b_dec: _forward(x, W_enc, b_enc, W_dec.T, b_dec),
            lambda x, W_enc, b_enc, W_dec, b_dec: (
                _forward(x, W_enc, b_enc, W_dec, b_dec)[0] - b_dec,
                _forward(x, W_enc, b_enc, W_dec, b_dec)[1],
            ),
            lambda *args: _forward(*args)[::-1],
        ],
        [
            "a missing ReLU",
            "forgetting to subtract b_dec",
            "a transposed encoder",
            "decoding with W_enc.T",
            "a transposed decoder",
            "b_dec not added back after decoding",
            "(z, x_hat) returned in the wrong order",
        ],
    ),
    checks.check_relu_sae_loss: (
        checks._relu_loss,
        [
            checks._loss_no_norms,
            checks._loss_norm_axis,
            checks._loss_mse_mean,
            checks._loss_batch_sum,
            lambda x, x_hat, z, W_dec, c: (
                ((x - x_hat) ** 2).sum(1).mean() + c * (z @ (W_dec**2).sum(1)).mean()
            ),
        ],
        [
            "an L1 penalty without the decoder norms",
            "decoder norms over the wrong axis",
            "an MSE averaged over d_in",
            "a loss summed over the batch",
            "squared decoder norms",
        ],
    ),
    checks.check_topk_activation: (
        checks._topk,
        [
            checks._topk_wrong_dim,
            checks._topk_no_relu,
            checks._topk_smallest,
            checks._topk_abs,
            _batch_topk,
        ],
        [
            "top-k over the wrong dimension",
            "a missing ReLU",
            "keeping the k smallest",
            "ranking by |pre|",
            "the k * batch largest of the whole batch",
        ],
    ),
    checks.check_normalize_decoder_rows: (
        checks._normalize_rows,
        [
            lambda W: W / W.norm(dim=0, keepdim=True),
            lambda W: W,
            lambda W: W / W.pow(2).sum(1, keepdim=True),
            lambda W: W / torch.linalg.norm(W, dim=1),
        ],
        [
            "normalising columns instead of rows",
            "forgetting the decoder-norm constraint",
            "dividing by the squared norm",
            "norms without keepdim=True",
        ],
    ),
}


test_passes_on_reference, test_stub_is_not_implemented, test_names_each_mistake = contract_tests(
    CHECKS
)


def test_an_unknown_wrong_answer_shows_expected_and_got():
    with pytest.raises(AssertionError, match="wrong answer"):
        checks.check_topk_activation(lambda pre, k: pre * 0)


def test_more_right_answers_pass(capsys):
    """einsum and addmm, an expanded bias, F.mse_loss with a sum, a threshold TopK, and an
    in-place F.normalize on the check's own copy."""

    def forward_expanded(x, W_enc, b_enc, W_dec, b_dec):
        z = torch.einsum("bi,is->bs", x, W_enc).sub(b_dec @ W_enc).add(b_enc).clamp(min=0)
        return [torch.addmm(b_dec, z, W_dec), z]

    def loss_mse_sum(x, x_hat, z, W_dec, l1_coeff):
        mse = torch.nn.functional.mse_loss(x_hat, x, reduction="sum") / len(x)
        return mse + l1_coeff * (z @ torch.linalg.norm(W_dec, dim=1)).mean()

    def topk_threshold(pre, k):
        kth = pre.topk(k, dim=-1).values[:, -1:]
        return torch.where(pre >= kth, pre.relu(), torch.zeros_like(pre))

    def normalize_in_place(W_dec):
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        return W_dec

    checks.check_relu_sae_forward(forward_expanded)
    checks.check_relu_sae_loss(loss_mse_sum)
    checks.check_topk_activation(topk_threshold)
    checks.check_normalize_decoder_rows(normalize_in_place)
    assert capsys.readouterr().out.count("passed") == 4


def test_an_unknown_topk_mistake_points_at_the_differing_entry():
    # the first entries of both answers are zeros; the message must show where they differ
    def one_extra(pre, k):
        return checks._topk(pre, k + 1)

    with pytest.raises(AssertionError, match=r"largest difference at index \(\d+, \d+\)"):
        checks.check_topk_activation(one_extra)
