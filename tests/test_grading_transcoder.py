"""The notebook-04 check passes the reference, flags a stub, and names each mistake."""

import torch
from grading_contract import contract_tests

from labhelpers.grading import transcoder as checks

CHECKS = {
    checks.check_direct_weights: (
        checks._direct_weights,
        [
            checks._no_centring,
            checks._no_ln_weight,
            checks._centred_over_rows,
            checks._enc_transposed,
            lambda W_dec_up, W_enc, w: (
                (W_dec_up * w - (W_dec_up * w).mean(1, keepdim=True)) @ W_enc
            ),
            lambda W_dec_up, W_enc, w: (
                torch.nn.functional.layer_norm(W_dec_up, (W_dec_up.shape[1],), weight=w) @ W_enc
            ),
        ],
        [
            "forgetting LayerNorm's centring",
            "leaving out LayerNorm's weight",
            "centring over the wrong axis",
            "a transposed encoder",
            "centring after multiplying by ln_weight",
            "each row divided by its own scale",
        ],
    ),
}

test_passes_on_reference, test_stub_is_not_implemented, test_names_each_mistake = contract_tests(
    CHECKS
)


def test_the_library_function_passes_the_check():
    from labhelpers.sae import SAEConfig
    from labhelpers.transcoder import Transcoder, direct_weights

    def via_library(W_dec_up, W_enc, ln_weight):
        transcoder = Transcoder(SAEConfig(d_in=W_enc.shape[0], d_sae=W_enc.shape[1], k=1))
        transcoder.W_enc.data = W_enc
        return direct_weights(W_dec_up, transcoder, ln_weight).detach()

    checks.check_direct_weights(via_library)


def test_right_answers_written_other_ways_pass(capsys):
    """einsum, a centring matrix, and ln_weight folded into W_enc."""

    def centring_matrix(W_dec_up, W_enc, ln_weight):
        d = W_dec_up.shape[1]
        return W_dec_up @ (torch.eye(d) - 1 / d) @ torch.diag(ln_weight) @ W_enc

    def folded(W_dec_up, W_enc, ln_weight):
        return (W_dec_up - W_dec_up.mean(1, keepdim=True)) @ (ln_weight[:, None] * W_enc)

    checks.check_direct_weights(centring_matrix)
    checks.check_direct_weights(folded)
    assert capsys.readouterr().out.count("passed") == 2
