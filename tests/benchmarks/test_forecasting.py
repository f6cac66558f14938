"""The forecasting table's own pieces (`benchmarks/table3_forecasting.py`): the NLinear baseline and the choice of
the TRACE variant on the validation split."""

import torch

from benchmarks.table3_forecasting import TRACE_METHODS, DLinearConfig, DLinearForPrediction, choose_on_validation


def test_nlinear_adds_the_last_step_back_and_dlinear_does_not():
    torch.manual_seed(0)
    past = torch.randn(4, 36, 1) + 10.0
    nlinear = DLinearForPrediction(DLinearConfig(context_length=36, prediction_length=12, variant="nlinear"))
    dlinear = DLinearForPrediction(DLinearConfig(context_length=36, prediction_length=12))
    for model in (nlinear, dlinear):
        with torch.no_grad():
            for layer in (model.trend, model.seasonal):
                layer.weight.zero_()
                layer.bias.zero_()
    torch.testing.assert_close(nlinear(past).prediction_outputs, past[:, -1:].expand(-1, 12, -1))
    assert dlinear(past).prediction_outputs.abs().max() == 0
    # a shifted series shifts the NLinear forecast by the same amount, whatever the weights
    torch.manual_seed(1)
    trained = DLinearForPrediction(DLinearConfig(context_length=36, prediction_length=12, variant="nlinear"))
    with torch.no_grad():
        shift = trained(past + 5.0).prediction_outputs - trained(past).prediction_outputs
    torch.testing.assert_close(shift, torch.full_like(shift, 5.0))


def test_the_trace_variant_is_chosen_by_validation_mse_alone():
    results = {
        "trace_lp": {"validation_mse": 0.9, "mse": 0.1},  # best on test, not on validation
        "trace_lora": {"validation_mse": 0.5, "mse": 0.8},
        "trace_lp_last": {"validation_mse": 0.7, "mse": 0.2},
        "trace_lora_last": {"validation_mse": 0.6, "mse": 0.3},
        "patchtst": {"validation_mse": 0.1, "mse": 0.1},  # a baseline is never a candidate
    }
    assert set(TRACE_METHODS) < set(results)
    assert choose_on_validation(results) == "trace_lora"
    assert choose_on_validation({k: results[k] for k in ("trace_lp", "trace_lp_last")}) == "trace_lp_last"
