"""The forecasting table's own pieces (`benchmarks/table3_forecasting.py`): the NLinear baseline and the choice of
the TRACE variant on the validation split."""

import numpy as np
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


def test_table3_with_the_broad_encoder_writes_every_row_and_the_encoder_curve(tmp_path, data_dir):
    """`--encoder broad`: the seed's broad-corpus encoder (here a tiny one-channel encoder planted in the cache, with
    a held-out log) is finetuned for a 36-step Time-MMD task; the table names it and prints its held-out curve."""
    import json

    from benchmarks import harness, table3_forecasting
    from modeling_trace import TraceForPretraining
    from tests.conftest import tiny_config
    from trace_training.recipes import load_recipe_file

    steps = load_recipe_file(harness.BROAD_RECIPE)["max_steps"]
    run = tmp_path / "cache" / "broad_encoders" / f"p{steps}" / "seed0"
    torch.manual_seed(0)
    config = tiny_config(num_input_channels=1, channel_names=None, context_length=60, patch_length=6, patch_stride=6)
    TraceForPretraining(config).save_pretrained(run / "final")
    (run / "train_log.jsonl").write_text(
        "\n".join(json.dumps({"step": s, "loss": 1.0, "eval_loss": v}) for s, v in ((10, 0.9), (20, 0.8))) + "\n"
    )
    table3_forecasting.main(
        ["--encoder", "broad", "--seeds", "0", "--tasks", "Health_US:12", "--cache-dir", str(tmp_path / "cache"),
         "--results-dir", str(tmp_path / "results")]
    )  # fmt: skip
    text = (tmp_path / "results" / "table3_forecasting.md").read_text()
    assert "broad-corpus encoder" in text and "seed 0: 0.900 (step 10) → min 0.800 (step 20)" in text
    for label in table3_forecasting.LABELS.values():
        assert f"| {label} |" in text
    # The averaged forecast's MSE is at most the variants' mean MSE (squared error is convex), to the table's rounding.
    mse = {line.split(" | ")[3]: float(line.split(" | ")[4].split()[0]) for line in text.splitlines() if "| Health_US |" in line}
    variants = [mse[table3_forecasting.LABELS[m]] for m in table3_forecasting.TRACE_METHODS]
    assert mse["TRACE, mean of the four variants"] <= np.mean(variants) + 1e-3
