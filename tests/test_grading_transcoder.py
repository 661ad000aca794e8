"""The notebook-04 check passes the reference, flags a stub, and names each mistake."""

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
        ],
        [
            "forgetting LayerNorm's centring",
            "leaving out LayerNorm's weight",
            "centring over the wrong axis",
            "a transposed encoder",
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
