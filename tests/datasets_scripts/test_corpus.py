"""Tests of datasets_scripts/corpus.py, the broad pretraining corpus, on the shipped data: training periods only,
univariate rows, and a leak check that catches every kind of held-out row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trace_datasets import corpus
from trace_datasets.common import finalize
from trace_datasets.paths import default_data_dir

SOURCES = ("ucr", "ett", "timemmd")  # NOAA has its own (slower) test below


@pytest.fixture(scope="module")
def built():
    return corpus.build(default_data_dir(), sources=SOURCES)


@pytest.fixture(scope="module")
def spans():
    return corpus.held_out_spans(default_data_dir(), SOURCES)


def one_row(source, series_id, start, freq, values, rid="probe"):
    record = corpus._record(rid, source, "probe", series_id, start, freq, values, "value", "probe")
    return finalize({"train": [record]}, ["none"])["train"]


def test_rows_are_univariate_windows_of_every_source(built):
    train = built["train"]
    assert set(train["source"]) == set(SOURCES)
    assert set(built["validation"]["source"]) == {"ett", "timemmd"}  # UCR has no validation split
    for row in train.select(range(0, len(train), 37)):
        values = np.asarray(row["past_values"], dtype=np.float64)
        assert values.shape[1] == 1 and len(row["channel_names"]) == 1
        assert len(values) <= max(corpus.WINDOW_LENGTHS)
        finite = values[np.isfinite(values)]
        assert finite.max() > finite.min()  # constant windows are dropped
    # every channel of a multivariate set is its own row: BasicMotions' 40 training cases x 6 channels
    assert sum(domain == "BasicMotions" for domain in train["domain"]) == 40 * 6


def test_time_indexed_rows_lie_in_the_training_periods(built, data_dir):
    from trace_datasets.ett import load_ett_splits
    from trace_datasets.timemmd import read_numeric, split_bounds

    train = built["train"].filter(lambda row: row["source"] in ("ett", "timemmd"))
    ends = {}
    for name in corpus.ETT_NAMES:
        ends[("ett", name)] = load_ett_splits(name, data_dir)["train"].index[-1]
    for domain in set(train.filter(lambda row: row["source"] == "timemmd")["series_id"]):
        frame = read_numeric(domain, data_dir, "OT")
        ends[("timemmd", domain)] = frame.index[split_bounds(len(frame))["train"][1] - 1]
    for row in train:
        assert corpus._end_of(row) <= ends[(row["source"], row["series_id"])].tz_localize(None), row["id"]


def test_the_leak_check_passes_on_the_corpus_and_catches_each_kind_of_held_out_row(built, spans, data_dir):
    from trace_datasets.ett import load_ett_splits
    from trace_datasets.ucr import load_ucr

    assert corpus.check_leak_free(built["train"], spans) == len(built["train"])
    # a UCR/UEA test case, one channel of a multivariate one included
    for name, channel in (("GunPoint", 0), ("BasicMotions", 4)):
        case = np.asarray(load_ucr(name, data_dir, pad=False)["test"][3]["past_values"], dtype=np.float64)[:, channel]
        with pytest.raises(corpus.LeakageError, match="UCR/UEA test case"):
            corpus.check_leak_free(one_row("ucr", f"{name}/train/999", "", "", case), spans)
    # an ETT window whose last hour is the first validation hour
    test_start = load_ett_splits("ETTh2", data_dir)["validation"].index[0]
    start = (test_start - pd.Timedelta(hours=63)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with pytest.raises(corpus.LeakageError, match="held-out ett period"):
        corpus.check_leak_free(one_row("ett", "ETTh2", start, "1h", np.arange(64.0)), spans)
    # the same window one hour earlier is training data
    start = (test_start - pd.Timedelta(hours=64)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert corpus.check_leak_free(one_row("ett", "ETTh2", start, "1h", np.arange(64.0)), spans) == 1
    # a Time-MMD window reaching into the test years
    with pytest.raises(corpus.LeakageError, match="held-out timemmd period"):
        corpus.check_leak_free(one_row("timemmd", "Energy", "2022-01-03T00:00:00Z", "7D", np.arange(36.0)), spans)


def test_noaa_rows_end_before_every_held_out_noaa_window(data_dir):
    rows = corpus.noaa_rows(data_dir, 0.5)
    assert rows
    cutoff = corpus.noaa_event_cutoff(data_dir)
    dataset = finalize({"train": rows}, ["none"])["train"]
    assert all(corpus._end_of(row) < cutoff for row in dataset)
    spans = corpus.held_out_spans(data_dir, ("noaa",))
    assert corpus.check_leak_free(dataset, spans) == len(rows)
    # a day starting at the Storm Events windows' first split boundary, and one inside a station's validation period
    station = sorted(spans["noaa"])[0]
    validation_start = spans["noaa"][station][1][0]
    for start in (cutoff, validation_start + pd.Timedelta(hours=5)):
        probe = one_row("noaa", station, start.strftime("%Y-%m-%dT%H:%M:%SZ"), "1h", np.arange(24.0))
        with pytest.raises(corpus.LeakageError, match="held-out noaa period"):
            corpus.check_leak_free(probe, spans)


def test_bad_arguments_are_refused(data_dir):
    with pytest.raises(ValueError, match="sources"):
        corpus.build(data_dir, sources=("ucr", "weather"))
    with pytest.raises(ValueError, match="window_lengths"):
        corpus.build(data_dir, sources=("ucr",), window_lengths=(1,))
