"""Recipes: precedence file < typed flags, validation before training, schedule, optimizer groups, collation."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import REPO_ROOT
from trace_training import (
    AlignRecipe,
    PretrainRecipe,
    RecipeError,
    TraceDataCollator,
    create_optimizer,
    parse_recipe,
    warmup_cosine_lambda,
)


def write_recipe(tmp_path, **values):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_recipe_file_wins_over_defaults_and_typed_flags_win_over_file(tmp_path):
    path = write_recipe(tmp_path, learning_rate=0.25, global_batch_size=12, mask_ratio=0.4)
    recipe, extras = parse_recipe(PretrainRecipe, ["--config", path])
    # the dataclass default is 1e-3 / 32 / 0.3: untyped flags must not override the file
    assert (recipe.learning_rate, recipe.global_batch_size, recipe.mask_ratio) == (0.25, 12, 0.4)
    assert extras.overridden == []
    recipe, extras = parse_recipe(PretrainRecipe, ["--config", path, "--learning_rate", "1e-4"])
    assert recipe.learning_rate == 1e-4 and recipe.global_batch_size == 12 and recipe.mask_ratio == 0.4
    assert extras.overridden == ["learning_rate"]
    recipe, _ = parse_recipe(PretrainRecipe, ["--config", path, "--model_overrides", "{dropout: 0.0}"])
    assert recipe.model_overrides == {"dropout": 0.0}


def test_unknown_key_is_rejected_with_a_suggestion(tmp_path):
    path = write_recipe(tmp_path, learning_rat=0.1)
    with pytest.raises(RecipeError, match=r"Unknown key.*'learning_rat'.*did you mean 'learning_rate'"):
        parse_recipe(PretrainRecipe, ["--config", path])


def test_a_typo_in_model_overrides_is_rejected_with_a_suggestion(tmp_path):
    path = write_recipe(tmp_path, model_overrides={"drop_out": 0.0, "context_length": 48, "hidden_size": 64})
    recipe, _ = parse_recipe(PretrainRecipe, ["--config", path])
    with pytest.raises(RecipeError, match=r"Unknown key\(s\) in model_overrides: 'drop_out' \(did you mean 'dropout'\?\)"):
        recipe.validate()
    recipe, _ = parse_recipe(AlignRecipe, ["--model_overrides", "{num_input_chanels: 1}"])
    with pytest.raises(RecipeError, match="did you mean 'num_input_channels'"):
        recipe.validate()
    # TraceConfig fields, their aliases (hidden_size) and PreTrainedConfig arguments (num_labels) are fine
    values = {"dropout": 0.0, "hidden_size": 64, "num_labels": 3, "channel_names": None}
    assert AlignRecipe(model_overrides=values).validate().model_overrides == values


@pytest.mark.parametrize(
    "values, num_processes, message",
    [
        ({"learning_rate": -1e-3}, 1, r"learning_rate must be > 0, got -0.001"),
        ({"global_batch_size": 30}, 4, r"global_batch_size=30 is not divisible by num_processes \(4\)"),
        ({"global_batch_size": 32, "gradient_accumulation_steps": 3}, 1, r"not divisible"),
        ({"learning_rate": "fast"}, 1, r"learning_rate must be float"),
        ({"mixed_precision": "fp8"}, 1, r"mixed_precision must be one of"),
        ({"mask_ratio": 1.5}, 1, r"mask_ratio must be in \(0, 1\)"),
    ],
)
def test_bad_values_raise_clear_errors(tmp_path, values, num_processes, message):
    recipe, _ = parse_recipe(PretrainRecipe, ["--config", write_recipe(tmp_path, **values)])
    with pytest.raises(RecipeError, match=message):
        recipe.validate(num_processes=num_processes)


def test_alignment_recipe_checks_its_own_values():
    with pytest.raises(RecipeError, match="num_hard_negatives must be > 0"):
        AlignRecipe(num_hard_negatives=0).validate()
    AlignRecipe(num_hard_negatives=None).validate()  # null = all negatives


def test_script_fails_before_training_on_a_bad_recipe(tmp_path):
    output_dir = tmp_path / "run"
    path = write_recipe(tmp_path, learning_rate=-0.1, output_dir=str(output_dir), model="trace-tiny")
    result = subprocess.run(
        [sys.executable, "-m", "trace_training.pretrain", "--config", path],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "learning_rate must be > 0, got -0.1" in result.stderr
    assert not output_dir.exists()  # nothing was built, logged or saved


def test_shipped_recipes_are_valid():
    from trace_training import FinetuneRecipe, load_recipe_file, recipe_from_dict

    classes = {"pretrain": PretrainRecipe, "align": AlignRecipe, "finetune": FinetuneRecipe}
    paths = sorted((REPO_ROOT / "configuration" / "recipes").glob("*.yaml"))
    assert {p.stem.split("-")[0] for p in paths} == set(classes)
    for path in paths:
        recipe = recipe_from_dict(classes[path.stem.split("-")[0]], load_recipe_file(path), str(path))
        recipe.validate(num_processes=2 if "quick" in path.stem else 1)


def test_warmup_then_cosine():
    factor = warmup_cosine_lambda(warmup_steps=4, total_steps=20, min_lr_ratio=0.1)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(4) == pytest.approx(1.0)
    assert factor(12) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the decay
    assert factor(20) == pytest.approx(0.1)
    decay = [factor(s) for s in range(4, 21)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))


def test_optimizer_decays_weight_matrices_only():
    from modeling_trace import TraceForPretraining
    from tests.conftest import tiny_config

    model = TraceForPretraining(tiny_config())
    optimizer = create_optimizer(model, 1e-3, weight_decay=0.05)
    assert optimizer.param_groups[0]["weight_decay"] == 0.05 and optimizer.param_groups[1]["weight_decay"] == 0.0
    decayed = {id(p) for p in optimizer.param_groups[0]["params"]}
    not_decayed = {id(p) for p in optimizer.param_groups[1]["params"]}
    # Expected from the module types, not from the optimizer's own rule: the weight of every Linear layer is
    # decayed; biases, LayerNorm parameters, the [CLS]/CIT/mask tokens and the like are not.
    linear_weights = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    assert linear_weights and decayed == linear_weights
    names = {id(p): n for n, p in model.named_parameters()}
    for token in ("cls_token", "channel_identity_tokens", "mask_token", "channel_embeddings"):
        token = f"embeddings.{token}"
        assert id(model.get_parameter(f"time_series_model.{token}")) in not_decayed, token
    assert all(not isinstance(model.get_submodule(names[i].rsplit(".", 1)[0]), torch.nn.Linear)
               or names[i].endswith(".bias") for i in not_decayed)
    assert decayed.isdisjoint(not_decayed) and len(decayed | not_decayed) == len(list(model.parameters()))
    # Frozen parameters are left out of the optimizer altogether.
    model.time_series_model.embeddings.mask_token.requires_grad_(False)
    grouped = [id(p) for g in create_optimizer(model, 1e-3).param_groups for p in g["params"]]
    assert id(model.time_series_model.embeddings.mask_token) not in grouped


def test_collator_pads_time_and_channels_and_marks_missing():
    collator = TraceDataCollator(context_length=6, num_channels=2, prediction_length=2, with_labels=True)
    rows = [
        {"past_values": [[1.0], [float("nan")], [3.0]], "future_values": [[4.0], [5.0], [6.0]], "label": 1},
        {"past_values": [[float(i), -float(i)] for i in range(8)], "future_values": [[1.0, 2.0], [3.0, float("nan")]], "label": 0},
    ]
    batch = collator(rows)
    assert batch["past_values"].shape == (2, 6, 2)
    observed = batch["past_observed_mask"]
    assert observed[0, :, 0].tolist() == [False, False, False, True, False, True]
    assert not observed[0, :, 1].any()  # the missing second channel
    assert batch["past_values"][1, :, 0].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]  # most recent steps kept
    assert torch.isnan(batch["future_values"][0, :, 1]).all() and batch["future_values"][0, :, 0].tolist() == [4.0, 5.0]
    assert math.isnan(batch["future_values"][1, 1, 1]) and batch["labels"].tolist() == [1, 0]
    with pytest.raises(ValueError, match="fewer than prediction_length=2"):
        collator([{"past_values": [[1.0]], "future_values": [[1.0]], "label": 0}])
    with pytest.raises(ValueError, match="has 3 channels but the model takes 2"):
        collator([{"past_values": np.zeros((4, 3)), "future_values": np.zeros((2, 3)), "label": 0}])
