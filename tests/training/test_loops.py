"""The shared training loop in this process, on a tiny model: pickle-free checkpoints, resume refusing changed recipe
values, and a log without repeated steps after a resume."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from trace_training.loops import (
    CheckpointError,
    build_accelerator,
    latest_checkpoint,
    read_log,
    train_loop,
)
from trace_training.recipes import RecipeError, TrainingRecipe, load_recipe_file

NUM_SAMPLES = 64
generator = torch.Generator().manual_seed(0)
INPUTS = torch.randn(NUM_SAMPLES, 6, generator=generator)
TARGETS = INPUTS @ torch.randn(6, 1, generator=generator)


def get_batch(indices):
    return {"x": INPUTS[indices], "y": TARGETS[indices]}


def compute_loss(model, batch):
    return nn.functional.mse_loss(model(batch["x"]), batch["y"]), {}


def make_recipe(output_dir, **overrides) -> TrainingRecipe:
    values = dict(output_dir=str(output_dir), max_steps=8, save_steps=3, save_total_limit=10, logging_steps=1,
                  global_batch_size=8, learning_rate=1e-2, warmup_steps=2, mixed_precision="no", report_to="jsonl", seed=3)
    values.update(overrides)
    return TrainingRecipe(**values).validate()


def train(recipe, resume=False, stop_at_step=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.1), nn.ReLU(), nn.Linear(16, 1))  # dropout: RNG matters
    accelerator = build_accelerator(recipe, "unit")
    result = train_loop(recipe, accelerator, model, NUM_SAMPLES, get_batch, compute_loss, "unit", resume, stop_at_step)
    return {k: v.detach().clone() for k, v in accelerator.unwrap_model(result["model"]).state_dict().items()}


class Payload:
    """Unpickling this object writes `marker` (stands for any code an attacker would run)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


ACCELERATE_PICKLES = ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin", "scheduler.bin", "pytorch_model.bin")


def plant_pickles(folder, marker, names=ACCELERATE_PICKLES):
    for name in names:  # torch.save: the layout torch.load (as accelerator.load_state calls it) reads
        torch.save(Payload(marker), folder / name)


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory):
    out = tmp_path_factory.mktemp("unbroken")
    return out, train(make_recipe(out))


def test_checkpoints_hold_no_pickle(unbroken):
    out, _ = unbroken
    checkpoint = latest_checkpoint(out)
    names = sorted(p.name for p in checkpoint.iterdir())
    assert names == ["model.safetensors", "optimizer.safetensors", "rng_state_0.json", "trainer_state.json"]
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["format"] == "trace-checkpoint" and state["global_step"] == 8
    assert state["recipe"]["learning_rate"] == 1e-2
    for path in checkpoint.iterdir():
        assert not path.read_bytes().startswith(b"\x80"), path  # no pickle protocol header anywhere


def test_resume_never_unpickles_planted_files_and_stays_bit_identical(unbroken, tmp_path):
    _, expected = unbroken
    out, marker = tmp_path / "run", tmp_path / "PWNED"
    train(make_recipe(out), stop_at_step=3)
    checkpoint = latest_checkpoint(out)
    assert checkpoint.name == "step_000003"
    # the scheduler file accelerator.load_state unpickled with weights_only=False, and an RNG file of its layout
    plant_pickles(checkpoint, marker, ["custom_checkpoint_0.pkl", "random_states_0.pkl"])
    resumed = train(make_recipe(out), resume=True)
    assert not marker.exists(), "a pickle planted in the checkpoint was executed on resume"
    assert expected.keys() == resumed.keys()
    for name in expected:
        assert torch.equal(expected[name], resumed[name]), name


def test_resume_refuses_an_old_pickle_checkpoint_without_loading_it(tmp_path):
    out, marker = tmp_path / "run", tmp_path / "PWNED"
    folder = out / "checkpoints" / "step_000003"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 3}))  # accelerator.save_state layout
    plant_pickles(folder, marker)
    with pytest.raises(CheckpointError, match="pickle") as info:
        train(make_recipe(out), resume=True)
    assert str(folder) in str(info.value) and "without --resume" in str(info.value)
    assert not marker.exists()


def test_resume_refuses_changed_recipe_values_and_keeps_recipe_yaml(tmp_path):
    out = tmp_path / "run"
    train(make_recipe(out), stop_at_step=3)
    recorded = (out / "recipe.yaml").read_text()
    with pytest.raises(RecipeError) as info:
        train(make_recipe(out, learning_rate=0.5, weight_decay=0.0), resume=True)
    message = str(info.value)
    assert "learning_rate" in message and "weight_decay" in message and "0.5" in message
    assert "max_steps" in message  # the message names what may change
    assert (out / "recipe.yaml").read_text() == recorded
    assert load_recipe_file(out / "recipe.yaml")["learning_rate"] == 1e-2
    assert [r["step"] for r in read_log(out)] == [1, 2, 3]  # nothing ran

    # values that only say where / how often to write, or how long to run, may change
    train(make_recipe(out, logging_steps=2, save_total_limit=1, max_steps=10), resume=True)
    assert load_recipe_file(out / "recipe.yaml")["max_steps"] == 10
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_000010"]


def test_resume_after_a_kill_logs_each_step_once(unbroken, tmp_path):
    unbroken_out, _ = unbroken
    out = tmp_path / "run"
    train(make_recipe(out), stop_at_step=5)  # stands for kill -9 after step 5: the last checkpoint is step 3
    assert [r["step"] for r in read_log(out)] == [1, 2, 3, 4, 5]
    train(make_recipe(out), resume=True)
    log = read_log(out)
    assert [r["step"] for r in log] == list(range(1, 9))
    assert [r["loss"] for r in log] == [r["loss"] for r in read_log(unbroken_out)]


# --- held-out evaluation and embedding geometry ---------------------------------------------------------------------


def test_evaluation_is_logged_and_leaves_training_unchanged(tmp_path):
    """`evaluate` runs every eval_steps (and at the end) and is logged with an eval_ prefix; the run's weights are
    bit-identical to the same run without evaluation (evaluation neither draws from nor moves the RNG)."""
    held_out = {"x": torch.randn(16, 6, generator=torch.Generator().manual_seed(9))}
    held_out["y"] = held_out["x"].sum(-1, keepdim=True)
    calls = []

    def evaluate(model):
        calls.append(model.training)
        torch.rand(3)  # an evaluation that draws random numbers must not shift the training draws
        return {"loss": nn.functional.mse_loss(model(held_out["x"]), held_out["y"])}

    plain = train(make_recipe(tmp_path / "plain", save_steps=None))
    recipe = make_recipe(tmp_path / "eval", save_steps=None, eval_steps=3, logging_steps=2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.1), nn.ReLU(), nn.Linear(16, 1))
    accelerator = build_accelerator(recipe, "unit")
    result = train_loop(recipe, accelerator, model, NUM_SAMPLES, get_batch, compute_loss, "unit", evaluate=evaluate)
    weights = accelerator.unwrap_model(result["model"]).state_dict()
    assert all(torch.equal(plain[k], weights[k]) for k in plain)
    assert calls == [False, False, False]  # steps 3, 6 and the last (8), in eval mode
    logged = [(r["step"], r["eval_loss"]) for r in read_log(tmp_path / "eval") if "eval_loss" in r]
    assert [step for step, _ in logged] == [3, 6, 8]
    assert result["summary"]["last_eval"]["loss"] == pytest.approx(logged[-1][1])


def test_embedding_geometry_reads_collapse():
    from trace_training.loops import embedding_geometry

    generator = torch.Generator().manual_seed(0)
    spread = nn.functional.normalize(torch.randn(512, 64, generator=generator), dim=-1)
    collapsed = nn.functional.normalize(torch.ones(512, 64) + 0.01 * torch.randn(512, 64, generator=generator), dim=-1)
    isotropic, degenerate = embedding_geometry(spread, "ts"), embedding_geometry(collapsed, "ts")
    assert abs(isotropic["ts_mean_cosine"]) < 0.01 and isotropic["ts_mean_norm"] < 0.1
    assert degenerate["ts_mean_cosine"] > 0.99 and degenerate["ts_mean_norm"] > 0.99
    # the mean pairwise cosine of the formula equals the explicit average over pairs
    explicit = (spread @ spread.t()).sum() - 512
    assert isotropic["ts_mean_cosine"] == pytest.approx(float(explicit) / (512 * 511), abs=1e-6)


def test_pair_retrieval_mrr_matches_the_ranks_counted_by_hand():
    """The held-out modality-matching MRR@10 the alignment loop logs: 1/rank of each item's own pair when it is in the
    top 10, else 0, in both directions (the similarity matrix and its transpose)."""
    from trace_training.loops import pair_retrieval_mrr

    generator = torch.Generator().manual_seed(0)
    ts = torch.randn(40, 16, generator=generator)
    text = ts + 1.5 * torch.randn(40, 16, generator=generator)  # noisy pairs: ranks spread over 1..40
    out = pair_retrieval_mrr(ts, text)
    scores = nn.functional.normalize(ts, dim=-1) @ nn.functional.normalize(text, dim=-1).T

    def by_hand(matrix):
        ranks = [1 + int((row > row[i]).sum()) for i, row in enumerate(matrix)]
        return sum(1.0 / r if r <= 10 else 0.0 for r in ranks) / len(ranks)

    assert out["ts_to_text_mrr@10"] == pytest.approx(by_hand(scores))
    assert out["text_to_ts_mrr@10"] == pytest.approx(by_hand(scores.T))
    assert 0.1 < out["ts_to_text_mrr@10"] < 0.9  # neither trivial nor empty
    assert pair_retrieval_mrr(ts, ts * 3.0) == {"ts_to_text_mrr@10": 1.0, "text_to_ts_mrr@10": 1.0}  # cosine: scale-free


# --- an unreadable newest checkpoint -----------------------------------------------------------------------------------


def _truncate(path):
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


@pytest.mark.parametrize("damage", ["model", "optimizer", "state", "missing"])
def test_resume_falls_back_to_the_previous_checkpoint_when_the_newest_is_unreadable(unbroken, tmp_path, capsys, damage):
    _, expected = unbroken
    out = tmp_path / "run"
    train(make_recipe(out), stop_at_step=7)  # checkpoints at steps 3 and 6
    newest = latest_checkpoint(out)
    assert newest.name == "step_000006"
    if damage == "model":
        _truncate(newest / "model.safetensors")
    elif damage == "optimizer":
        _truncate(newest / "optimizer.safetensors")
    elif damage == "state":
        _truncate(newest / "trainer_state.json")
    else:
        (newest / "model.safetensors").unlink()
    capsys.readouterr()
    resumed = train(make_recipe(out), resume=True)
    printed = capsys.readouterr().out
    assert "skipping unreadable checkpoint step_000006" in printed
    assert "falling back to the previous complete checkpoint" in printed and "step_000003" in printed
    for name in expected:  # resumed from step 3: the same weights as the unbroken run
        assert torch.equal(expected[name], resumed[name]), name
    assert [r["step"] for r in read_log(out)] == list(range(1, 9))


def test_resume_refuses_when_no_checkpoint_is_readable_and_names_the_file(tmp_path):
    from trace_training.loops import load_checkpoint

    out = tmp_path / "run"
    train(make_recipe(out), stop_at_step=3)
    checkpoint = latest_checkpoint(out)
    _truncate(checkpoint / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"no readable checkpoint.*step_000003.*model\.safetensors.*truncated"):
        train(make_recipe(out), resume=True)
    # loading the file directly names it too (not a bare SafetensorError)
    with pytest.raises(CheckpointError, match=rf"Cannot read {checkpoint / 'model.safetensors'}"):
        load_checkpoint(checkpoint, None, None, None, None)


def test_a_full_disk_says_what_and_where(tmp_path, monkeypatch):
    import errno

    import safetensors.torch

    from trace_training.loops import DiskFullError, _save_tensors

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", no_space)
    with pytest.raises(DiskFullError, match=r"Could not write .*model\.safetensors: the disk is full .*--resume"):
        _save_tensors({"w": torch.zeros(2)}, tmp_path / "model.safetensors")


def test_series_batches_precollated_equal_batches_collated_on_demand(monkeypatch):
    """The loop collates a small training set once and slices it; the tensors are those of collating each batch's
    rows (variable lengths, fewer channels, NaNs), and a set too large for that is collated batch by batch."""
    import numpy as np
    import torch
    from datasets import Dataset

    from modeling_trace.data_collator import TraceDataCollator
    from trace_training import loops

    rng = np.random.default_rng(0)
    rows = []
    for n in rng.integers(5, 40, size=37):
        values = rng.normal(size=(int(n), int(rng.integers(1, 4))))
        values[rng.random(values.shape) < 0.1] = np.nan
        rows.append(values.tolist())
    dataset = Dataset.from_dict({"past_values": rows})
    collator = TraceDataCollator(context_length=24, num_channels=3)
    indices = [5, 0, 36, 5, 17]
    expected = collator([dataset[i] for i in indices])
    for limit in (loops.PRECOLLATE_MAX_VALUES, 10):  # precollated, then on demand
        monkeypatch.setattr(loops, "PRECOLLATE_MAX_VALUES", limit)
        got = loops.series_batches(collator, dataset)(indices)
        assert got.keys() == expected.keys()
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, equal_nan=True)
