"""Trainer + PEFT: LoRA classification on UCR ItalyPowerDemand, forecasting on Time-MMD Environment."""

from __future__ import annotations

import numpy as np
import torch

from trace_training import FinetuneRecipe
from trace_training.finetuning import (
    apply_finetune_mode,
    build_finetune_model,
    build_trainer,
    count_parameters,
    predict,
    save_finetuned,
)


def test_lora_classification_trains_only_adapters_and_head(tmp_path, data_dir):
    from peft import PeftModel

    from modeling_trace import AutoModelForTimeSeriesClassification, TraceForClassification
    from trace_datasets.ucr import load_ucr

    data = load_ucr("ItalyPowerDemand", data_dir=data_dir)
    train, test = data["train"], data["test"].select(range(0, 1029, 3))
    recipe = FinetuneRecipe(
        task="classification", mode="lora", model="trace-tiny", output_dir=str(tmp_path / "run"),
        model_overrides={"num_input_channels": 1, "channel_names": None, "context_length": 24, "dropout": 0.0},
        learning_rate=3e-3, weight_decay=0.01, max_steps=60, global_batch_size=16, logging_steps=20,
        report_to="none", lora_r=4, lora_alpha=8, eval_batch_size=512,
    ).validate()
    torch.manual_seed(0)
    model = build_finetune_model(recipe, num_labels=2, id2label={0: "1", 1: "2"})
    model.save_pretrained(tmp_path / "base")
    config = model.config
    model = apply_finetune_mode(model, "classification", "lora", recipe.lora_r, recipe.lora_alpha)

    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    d, r, layers = config.d_model, recipe.lora_r, config.num_hidden_layers
    lora_expected = layers * 4 * r * (d + d)  # A: r x d, B: d x r for q, k, v, o of every layer
    head_expected = d * 2 + 2
    assert all(("lora_" in n) or ("classifier" in n and "modules_to_save" in n) for n in trainable), sorted(trainable)
    assert sum(v for n, v in trainable.items() if "lora_" in n) == lora_expected
    assert sum(v for n, v in trainable.items() if "classifier" in n) == head_expected
    assert count_parameters(model)[0] == lora_expected + head_expected

    trainer = build_trainer(recipe, model, train, test)
    assert trainer.args.label_names == ["labels"]
    before = trainer.evaluate(metric_key_prefix="before")
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainer.train()
    after = trainer.evaluate()
    assert "eval_accuracy" in after, (before, after)
    assert after["eval_accuracy"] >= before["before_accuracy"] + 0.2, (before, after)
    assert after["eval_accuracy"] > 0.8 and "eval_macro_f1" in after
    for name, parameter in model.named_parameters():
        if name in frozen_before:
            assert torch.equal(parameter, frozen_before[name]), name  # the backbone did not move
    # the Trainer's FLOP estimate, with its parameter count kept for the run, is transformers' own (adapters counted)
    from transformers import Trainer

    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(16)])
    assert trainer.floating_point_ops(batch) == Trainer.floating_point_ops(trainer, batch) > 0
    assert trainer._flos_parameters is not None  # counted once, not walked at every step
    # 60 steps of batch 16 over 67 rows of one length = 12 epochs of every row
    assert len(train) == 67 and trainer.state.total_flos == 12 * 67 * Trainer.floating_point_ops(trainer, batch) / 16

    model.eval()
    expected = predict(model, test, "classification")
    folders = save_finetuned(model, tmp_path / "run", "lora")
    base = TraceForClassification.from_pretrained(tmp_path / "base")
    reloaded = PeftModel.from_pretrained(base, folders["adapter"]).eval()
    assert np.array_equal(predict(reloaded, test, "classification"), expected)
    merged = AutoModelForTimeSeriesClassification.from_pretrained(folders["final"]).eval()
    assert type(merged).__name__ == "TraceForClassification"
    np.testing.assert_allclose(predict(merged, test, "classification"), expected, rtol=1e-4, atol=1e-5)


def test_forecasting_beats_the_last_value_forecast(tmp_path):
    from transformers import AutoModelForTimeSeriesPrediction

    from trace_datasets import timemmd

    data = timemmd.build("forecasting", domains=["Environment"], input_length=96, horizon=48, stride=8)
    train, test = data["train"], data["test"].select(range(0, len(data["test"]), 4))
    recipe = FinetuneRecipe(
        task="forecasting", mode="full", model="trace-tiny", prediction_length=48, output_dir=str(tmp_path / "run"),
        model_overrides={"num_input_channels": 1, "channel_names": None, "context_length": 96},
        learning_rate=1e-3, max_steps=80, global_batch_size=32, logging_steps=40, report_to="none", eval_batch_size=256,
    ).validate()
    torch.manual_seed(0)
    model = apply_finetune_mode(build_finetune_model(recipe), "forecasting", "full")
    trainer = build_trainer(recipe, model, train, test)
    assert trainer.args.label_names == ["future_values"]
    trainer.train()
    metrics = trainer.evaluate()

    past = np.stack([np.asarray(r["past_values"], dtype=np.float64) for r in test])
    future = np.stack([np.asarray(r["future_values"], dtype=np.float64) for r in test])
    naive = np.repeat(past[:, -1:, :], future.shape[1], axis=1)
    naive_mse = float(np.nanmean((naive - future) ** 2))
    assert metrics["eval_mse"] < naive_mse, (metrics["eval_mse"], naive_mse)
    print(f"Environment H=48: model MSE {metrics['eval_mse']:.2f}, last-value MSE {naive_mse:.2f}")

    folders = save_finetuned(model, tmp_path / "run", "full")
    loaded = AutoModelForTimeSeriesPrediction.from_pretrained(folders["final"]).eval()
    model.eval()
    np.testing.assert_allclose(predict(loaded, test, "forecasting"), predict(model, test, "forecasting"), rtol=1e-5, atol=1e-4)


def test_lora_wrap_and_adapter_reload_emit_no_deprecation_warning(tmp_path):
    """PEFT reads `is_gradient_checkpointing` (deprecated in transformers) when it wraps a model and when it loads an
    adapter; TRACE models answer it without the warning, correctly, and real warnings still show."""
    import warnings

    from peft import PeftModel

    from modeling_trace.modeling_trace import TraceForClassification
    from modeling_trace.presets import load_preset

    model = TraceForClassification(load_preset("trace-tiny", num_labels=3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wrapped = apply_finetune_mode(model, "classification", "lora", 4, 8)
        wrapped.save_pretrained(tmp_path / "adapter")
        base = TraceForClassification(load_preset("trace-tiny", num_labels=3))
        PeftModel.from_pretrained(base, tmp_path / "adapter")
        warnings.warn("a real warning", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["a real warning"]
    assert any("lora_" in name for name, _ in wrapped.named_parameters())
    assert base.is_gradient_checkpointing is False
    base.activation_checkpointing_enable()
    assert base.is_gradient_checkpointing is True


def _train_weights(recipe, train, test, precollate: bool, num_labels=None):
    torch.manual_seed(0)
    id2label = {i: str(i) for i in range(num_labels)} if num_labels else None
    model = apply_finetune_mode(build_finetune_model(recipe, num_labels=num_labels, id2label=id2label), recipe.task, "full")
    trainer = build_trainer(recipe, model, train, test, precollate=precollate)
    trainer.train()
    metrics = trainer.evaluate()
    return {n: p.detach().clone() for n, p in model.named_parameters()}, metrics, trainer


def test_precollated_training_equals_training_on_the_arrow_rows(tmp_path, data_dir):
    """The Trainer fed tensors collated once (`CollatedRows`) samples the same rows in the same order as with the
    Arrow rows and `TraceDataCollator`: identical weights and evaluation, for both tasks."""
    from trace_datasets import timemmd
    from trace_datasets.ucr import load_ucr
    from trace_training.finetuning import CollatedRows

    data = load_ucr("ItalyPowerDemand", data_dir=data_dir)
    classification = (
        FinetuneRecipe(
            task="classification", mode="full", model="trace-tiny", output_dir=str(tmp_path / "c"),
            model_overrides={"num_input_channels": 1, "channel_names": None, "context_length": 24, "dropout": 0.1},
            max_steps=6, global_batch_size=16, logging_steps=3, report_to="none", eval_batch_size=64, seed=3,
        ).validate(),
        data["train"], data["test"].select(range(100)), 2,
    )  # fmt: skip
    forecast = timemmd.build("forecasting", domains=["Environment"], input_length=96, horizon=48, stride=8)
    forecasting = (
        FinetuneRecipe(
            task="forecasting", mode="full", model="trace-tiny", prediction_length=48, output_dir=str(tmp_path / "f"),
            model_overrides={"num_input_channels": 1, "channel_names": None, "context_length": 96},
            max_steps=4, global_batch_size=8, logging_steps=2, report_to="none", eval_batch_size=64,
        ).validate(),
        forecast["train"], forecast["test"].select(range(40)), None,
    )  # fmt: skip
    for recipe, train, test, num_labels in (classification, forecasting):
        fast, fast_metrics, trainer = _train_weights(recipe, train, test, True, num_labels)
        assert isinstance(trainer.train_dataset, CollatedRows)
        slow, slow_metrics, trainer = _train_weights(recipe, train, test, False, num_labels)
        assert not isinstance(trainer.train_dataset, CollatedRows)
        for name in slow:
            assert torch.equal(fast[name], slow[name]), (recipe.task, name)
        assert {k: v for k, v in fast_metrics.items() if "runtime" not in k and "per_second" not in k} == {
            k: v for k, v in slow_metrics.items() if "runtime" not in k and "per_second" not in k
        }


def test_the_trainer_setup_also_trains_a_baseline_without_channel_names(tmp_path):
    """Table 3's baselines go through the same `build_trainer` / `predict` as TRACE: transformers' PatchTST, whose
    config has no `channel_names`, trains on the schema rows (its test MSE falls) and predicts the horizon's shape."""
    from transformers import PatchTSTConfig, PatchTSTForPrediction

    from trace_datasets import timemmd

    data = timemmd.build("forecasting", domains=["Energy"], input_length=36, horizon=12, stride=4)
    train, test = data["train"], data["test"].select(range(16))
    recipe = FinetuneRecipe(
        task="forecasting", mode="full", model="trace-tiny", prediction_length=12, output_dir=str(tmp_path / "run"),
        learning_rate=1e-3, max_steps=30, global_batch_size=16, logging_steps=10, report_to="none",
    ).validate()
    torch.manual_seed(0)
    model = PatchTSTForPrediction(PatchTSTConfig(
        num_input_channels=1, context_length=36, prediction_length=12, patch_length=6, patch_stride=6, d_model=16,
        num_hidden_layers=1, num_attention_heads=2, ffn_dim=32, scaling="std",
    ))  # fmt: skip
    future = np.asarray(test["future_values"], dtype=np.float64)
    before = float(np.mean((predict(model, test, "forecasting") - future) ** 2))
    trainer = build_trainer(recipe, model, train)
    trainer.train()
    predictions = predict(trainer.model, test, "forecasting")
    assert predictions.shape == (16, 12, 1)
    after = float(np.mean((predictions - future) ** 2))
    assert after < before, (before, after)


def test_accelerate_package_check_is_cached_with_the_same_answer():
    """accelerate's optimizer step asks `is_lomo_available()` twice a step (an uncached `find_spec`); after the
    training entry points' patch it is a cached function giving the uncached answer."""
    import accelerate.optimizer
    from accelerate.utils.imports import is_lomo_available

    from trace_training.optimization import cache_accelerate_package_checks

    cache_accelerate_package_checks()
    cache_accelerate_package_checks()  # idempotent: one cache, not a cache of a cache
    patched = accelerate.optimizer.is_lomo_available
    assert hasattr(patched, "cache_info") and patched.__wrapped__ is is_lomo_available
    assert patched() == is_lomo_available()
