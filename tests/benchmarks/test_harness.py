"""The leakage assertion every benchmark runs (`benchmarks/harness.py`), on constructed windows."""


import pandas as pd
import pytest
from datasets import Dataset

from benchmarks.harness import (
    LeakageError,
    assert_disjoint_ids,
    assert_no_temporal_leakage,
    check_intervals,
    window_intervals,
)

T = pd.Timestamp


def rows(starts, length, horizon=0, freq="1D", series="s"):
    return Dataset.from_dict(
        {
            "id": [f"{series}/{s}" for s in starts],
            "start_timestamp": [f"{s}T00:00:00Z" for s in starts],
            "freq": [freq] * len(starts),
            "past_values": [[[0.0]] * length for _ in starts],
            "future_values": [[[0.0]] * horizon for _ in starts],
            "series_id": [series] * len(starts),
        }
    )


def test_intervals_include_the_horizon_and_handle_month_steps():
    (group, start, end), = window_intervals(rows(["2020-01-01"], 3, 2))
    assert (group, start, end) == ("s", T("2020-01-01", tz="UTC"), T("2020-01-06", tz="UTC"))
    (_, _, end), = window_intervals(rows(["2020-01-01"], 3, 2), include_future=False)
    assert end == T("2020-01-04", tz="UTC")
    (_, _, end), = window_intervals(rows(["2020-01-01"], 2, 0, freq="1MS"))
    assert end == T("2020-03-01", tz="UTC")


def test_adjacent_windows_pass():
    # train covers days 1-5 (past 3 + future 2), test starts on day 6: touching, not overlapping
    summary = assert_no_temporal_leakage(rows(["2020-01-01"], 3, 2), rows(["2020-01-06", "2020-01-09"], 3, 2))
    assert summary == {"groups": 1, "train_windows": 1, "test_windows": 2}


def test_overlapping_future_is_caught():
    with pytest.raises(LeakageError, match="overlaps"):
        assert_no_temporal_leakage(rows(["2020-01-01"], 3, 2), rows(["2020-01-05"], 3, 2))
    # without the horizon the same windows do not overlap
    assert_no_temporal_leakage(rows(["2020-01-01"], 3, 2), rows(["2020-01-05"], 3, 2), include_future=False)


def test_test_window_before_training_is_not_chronological():
    with pytest.raises(LeakageError, match="not chronological"):
        assert_no_temporal_leakage(rows(["2020-03-01"], 3), rows(["2020-01-01"], 3))


def test_groups_are_independent_and_overlap_inside_a_long_window():
    train = [("a", T("2020-01-01"), T("2020-07-01"))]  # a 180-day window
    check_intervals(train, [("b", T("2020-02-01"), T("2020-02-08"))])  # other station: no constraint
    with pytest.raises(LeakageError):
        check_intervals(train, [("a", T("2020-02-01"), T("2020-02-08"))])


def test_rows_without_time_and_shared_ids():
    no_time = rows(["2020-01-01"], 3).map(lambda r: {"start_timestamp": ""})
    with pytest.raises(ValueError, match="time extent is unknown"):
        window_intervals(no_time)
    assert_disjoint_ids(rows(["2020-01-01"], 3), rows(["2020-01-02"], 3))
    with pytest.raises(LeakageError, match="in both splits"):
        assert_disjoint_ids(rows(["2020-01-01"], 3), rows(["2020-01-01"], 3))


def test_encoder_variants_are_config_overrides_and_mean_pooling_is_one():
    import benchmarks.harness as harness
    from tests.conftest import tiny_config

    overrides = harness.VARIANTS["mean_pooled"].config_overrides()
    assert overrides == {"attention_type": "full", "use_channel_identity_tokens": False, "pooling": "mean"}
    assert harness.VARIANTS["trace"].config_overrides()["pooling"] == "cls"
    assert tiny_config(**overrides).pooling == "mean"  # every override is a TraceConfig argument
    # no run-time patching of the library is left
    for name in ("use_mean_pooled_sample_embedding", "_mean_pooled_alignment"):
        assert not hasattr(harness, name)


def test_a_cached_encoder_is_reused_only_with_every_override_it_was_trained_with(tmp_path):
    import benchmarks.harness as harness
    from tests.conftest import tiny_config

    corpus = harness.CORPORA["timemmd"]["overrides"]
    overrides = {**corpus, **harness.VARIANTS["trace"].config_overrides()}
    assert not harness._cached_encoder_matches(tmp_path, overrides)  # nothing saved yet
    tiny_config(**{k: v for k, v in overrides.items() if k != "revin_statistics_embedding"}).save_pretrained(tmp_path)
    # an encoder trained before the corpus switched `revin_statistics_embedding` on is rebuilt, not reused
    assert not harness._cached_encoder_matches(tmp_path, overrides)
    tiny_config(**overrides).save_pretrained(tmp_path)
    assert harness._cached_encoder_matches(tmp_path, overrides)
    assert not harness._cached_encoder_matches(tmp_path, {**overrides, "pooling": "mean"})


def test_pad_windows_keeps_the_most_recent_steps_and_marks_padding_nan():
    import numpy as np

    from benchmarks.harness import pad_windows

    dataset = Dataset.from_dict({"past_values": [[[1.0], [2.0], [3.0]], [[4.0, 5.0]]]})
    windows = pad_windows(dataset, 2)
    assert windows.shape == (2, 2, 2)
    np.testing.assert_array_equal(windows[0], [[2.0, np.nan], [3.0, np.nan]])
    np.testing.assert_array_equal(windows[1], [[np.nan, np.nan], [4.0, 5.0]])


def test_budget_flags_and_the_convergence_summaries():
    from benchmarks import harness

    parser = harness.common_arguments("t")
    budget = harness.budget_from_args(parser.parse_args(["--budget", "mini", "--align-steps", "600", "--seeds", "0"]))
    assert (budget.model, budget.pretrain_steps, budget.align_steps, budget.seeds) == ("trace-mini", 1000, 600, (0,))
    assert harness.budget_from_args(parser.parse_args(["--full"])) == harness.FULL
    # Student-t interval over seeds: 1, 2, 3 -> mean 2, half-width t(0.975, 2) * 1 / sqrt(3) = 2.484
    assert harness.mean_ci([1.0, 2.0, 3.0]) == "2.000 [-0.484, 4.484]"
    assert harness.mean_ci([0.5]) == "0.500" and harness.mean_ci([]) == "n/a"
    curve = [{"step": 10, "loss": 4.0, "mrr": 0.1}, {"step": 20, "loss": 3.0, "mrr": 0.3}, {"step": 30, "loss": 3.3, "mrr": 0.2}]
    assert harness.describe_curve(curve) == (
        "4.000 (step 10) → min 3.000 (step 20) → 3.300 (step 30; +10.0% over the last interval)"
    )
    assert "max 0.300 (step 20)" in harness.describe_curve(curve, "mrr", "max")
    assert harness.describe_curve(curve, "absent") == "—"


def test_a_corpus_with_other_texts_reuses_the_stage_1_encoders_of_its_windows(tmp_path, monkeypatch):
    """`timemmd_reports` (the same windows as `timemmd`, other texts) aligns from `timemmd`'s cached stage-1 encoder:
    stage 1 never reads a text, so retraining it would only repeat it."""
    import benchmarks.harness as harness
    import trace_training.loops as loops
    from modeling_trace import TraceModel
    from tests.conftest import tiny_config

    assert harness.CORPORA["timemmd_reports"]["pretrain_corpus"] == "timemmd"
    assert harness.CORPORA["timemmd_reports"]["overrides"] == harness.CORPORA["timemmd"]["overrides"]
    overrides = {"num_input_channels": 1, "channel_names": None, "context_length": 48}
    calls = []

    def fake_stage(stage):
        def run(recipe, train_dataset, eval_dataset=None):
            calls.append((stage, recipe.output_dir, getattr(recipe, "model", None)))
            TraceModel(tiny_config(**overrides, **harness.VARIANTS["trace"].config_overrides())).save_pretrained(
                f"{recipe.output_dir}/final"
            )

        return run

    monkeypatch.setattr(loops, "run_pretraining", fake_stage("pretrain"))
    monkeypatch.setattr(loops, "run_alignment", fake_stage("align"))
    budget = harness.REDUCED
    train = [{"past_values": [[0.0]] * 48}] * 4
    variant = harness.VARIANTS["trace"]
    harness.train_encoder("timemmd", train, variant, 0, budget, overrides, tmp_path)
    harness.train_encoder("timemmd_reports", train, variant, 0, budget, overrides, tmp_path, pretrain_corpus="timemmd")
    stages = [(stage, output.split(str(tmp_path))[1]) for stage, output, _ in calls]
    assert stages == [
        ("pretrain", "/encoders/timemmd/trace-tiny/p20b4/trace/seed0/pretrain"),
        ("align", "/encoders/timemmd/trace-tiny/p20a20b4/trace/seed0/align"),
        ("align", "/encoders/timemmd_reports/trace-tiny/p20a20b4/trace/seed0/align"),  # no second stage 1
    ]
    assert calls[2][2] == calls[0][1] + "/final"  # aligned from the shared stage-1 encoder
    assert not (tmp_path / "encoders" / "timemmd_reports" / "trace-tiny" / "p20b4").exists()


def test_variants_that_differ_only_in_the_alignment_share_their_stage_1_encoder():
    import benchmarks.harness as harness

    names = {name: harness.stage_1_name(variant) for name, variant in harness.VARIANTS.items()}
    assert names["no_hard_negatives"] == "trace"  # K = all vs 32 changes the contrastive loss only
    assert all(names[n] == n for n in names if n != "no_hard_negatives")  # every other switch changes the encoder
