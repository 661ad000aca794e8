"""Each notebook-03 check passes the reference, flags a stub, and names each mistake."""

import pytest

from labhelpers.grading import sae as checks


def _stub(*args):
    raise NotImplementedError


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


@pytest.mark.parametrize("check", list(CHECKS), ids=lambda c: c.__name__)
def test_passes_on_reference(check, capsys):
    check(CHECKS[check][0])
    assert "passed" in capsys.readouterr().out


@pytest.mark.parametrize("check", list(CHECKS), ids=lambda c: c.__name__)
def test_stub_is_not_implemented(check):
    with pytest.raises(AssertionError, match="not implemented yet"):
        check(_stub)


@pytest.mark.parametrize(
    ("check", "index"),
    [(c, i) for c in CHECKS for i in range(len(CHECKS[c][1]))],
    ids=lambda v: v.__name__ if callable(v) else str(v),
)
def test_names_each_mistake(check, index):
    _, wrong_fns, names = CHECKS[check]
    with pytest.raises(AssertionError) as error:
        check(wrong_fns[index])
    assert names[index] in str(error.value)


def test_an_unknown_wrong_answer_shows_expected_and_got():
    with pytest.raises(AssertionError, match="wrong answer"):
        checks.check_topk_activation(lambda pre, k: pre * 0)
