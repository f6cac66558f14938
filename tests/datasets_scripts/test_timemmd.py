"""Tests of datasets_scripts/timemmd.py on the shipped Time-MMD files and on broken copies of them."""

from __future__ import annotations

import csv
import shutil
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest

from trace_datasets import timemmd
from trace_datasets.schema import COLUMNS
from trace_datasets.timemmd import TimeMMDFormatError, build, is_missing_text, main, read_numeric


def numeric_rows(data_dir: Path, domain: str) -> list[dict]:
    with open(data_dir / "timemmd" / "numerical" / domain / f"{domain}.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def split_sizes(n: int) -> dict[str, int]:
    n_train, n_val = int(n * 0.7), int(n * 0.1)
    return {"train": n_train, "validation": n_val, "test": n - n_train - n_val}


def test_forecasting_counts_schema_and_split(data_dir):
    # Security (monthly) and Energy (weekly) have no gap and no missing OT, so every CSV row is one step.
    dd = build("forecasting", ["Security", "Energy"], data_dir)
    assert set(dd) == {"train", "validation", "test"}
    for domain in ("Security", "Energy"):
        setting = timemmd.DOMAIN_SETTINGS[domain]
        L, H = setting.input_length, setting.horizons[0]
        rows = numeric_rows(data_dir, domain)
        for split, size in split_sizes(len(rows)).items():
            ds = dd[split]
            assert list(ds.features) == list(COLUMNS)
            assert ds["domain"].count(domain) == max(0, size - L - H + 1), (domain, split)
        sample = dd["train"][dd["train"]["domain"].index(domain)]
        assert len(sample["past_values"]) == L and len(sample["future_values"]) == H
        assert sample["channel_names"] == ["OT"] and sample["source"] == "timemmd"
        assert dd["train"].features["label"].names[sample["label"]] == domain
        # Raw values: the first training window starts at the oldest CSV row.
        oldest = min(rows, key=lambda r: r["start_date"])
        assert sample["start_timestamp"].startswith(oldest["start_date"])
        assert sample["past_values"][0][0] == pytest.approx(float(oldest["OT"]), rel=1e-6)


def test_no_window_crosses_a_split_boundary(data_dir):
    dd = build("forecasting", ["Energy"], data_dir, horizon="long")
    L, H = timemmd.DOMAIN_SETTINGS["Energy"].input_length, timemmd.DOMAIN_SETTINGS["Energy"].horizons[1]
    first = date.fromisoformat(min(r["start_date"] for r in numeric_rows(data_dir, "Energy")))
    covered = {}
    for split in ("train", "validation", "test"):
        steps = set()
        for stamp in dd[split]["start_timestamp"]:
            s = (date.fromisoformat(stamp[:10]) - first).days // 7
            steps.update(range(s, s + L + H))
        covered[split] = steps
    assert max(covered["train"]) < min(covered["validation"])
    assert max(covered["validation"]) < min(covered["test"])


def test_newest_first_and_unordered_domains_are_sorted(data_dir):
    for domain in ("Climate", "Economy"):
        ds = build("forecasting", [domain], data_dir, max_windows_per_split=20)["train"]
        stamps = ds["start_timestamp"]
        assert stamps == sorted(stamps)
        rows = sorted(numeric_rows(data_dir, domain), key=lambda r: r["start_date"])
        L = timemmd.DOMAIN_SETTINGS[domain].input_length
        expected = [float(r["OT"]) for r in rows[:L]]
        assert [v[0] for v in ds[0]["past_values"]] == pytest.approx(expected, rel=1e-6)


def test_health_afr_repeated_date_header(data_dir):
    with open(data_dir / "timemmd" / "numerical" / "Health_AFR" / "Health_AFR.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert header.count("date") == 2  # the quirk the builder works around
    frame = read_numeric("Health_AFR", data_dir)
    assert frame.index.is_monotonic_increasing and frame["OT"].notna().any()
    assert not np.isinf(frame["OT"].to_numpy()).any()


def test_health_us_dates_are_one_week_apart(data_dir):
    frame = read_numeric("Health_US", data_dir)
    rows = numeric_rows(data_dir, "Health_US")
    assert len(frame) == len(rows)
    assert (frame.index.to_series().diff().dropna() == np.timedelta64(7, "D")).all()
    assert [float(v) for v in frame["OT"]] == pytest.approx([float(r["OT"]) for r in rows])


def test_text_pairing_rule_on_a_hand_checked_window(data_dir):
    # First Energy training window: 36 weeks from 1993-04-05, so it spans 1993-04-05 .. 1993-12-12.
    # Read by hand in Energy_search.csv, the texts ending in that span with the latest end date is row
    # 727 (1993-12-06 .. 1993-12-12).
    ds = build("forecasting", ["Energy"], data_dir, max_windows_per_split=2)["train"]
    row = ds[0]
    assert row["start_timestamp"] == "1993-04-05T00:00:00Z"
    assert row["source_file"].endswith("Energy_search.csv#727") and row["narrative_type"] == "search"
    with open(data_dir / "timemmd" / "textual" / "Energy" / "Energy_search.csv", newline="") as fh:
        text_rows = list(csv.DictReader(fh))
    text_row = next(r for r in text_rows if r[""] == "727")
    assert (text_row["start_date"], text_row["end_date"]) == ("1993-12-06", "1993-12-12")
    assert row["text"] == text_row["fact"].strip()
    # And 727 is what the rule gives: no other usable text ends inside the span later than it does.
    L = timemmd.DOMAIN_SETTINGS["Energy"].input_length
    span_end = (date(1993, 4, 5) + timedelta(weeks=L) - timedelta(days=1)).isoformat()
    assert span_end == "1993-12-12"
    in_span = [r for r in text_rows if "1993-04-05" <= r["end_date"] <= span_end and not is_missing_text(r["fact"])]
    assert max(r["end_date"] for r in in_span) == "1993-12-12"
    assert [r[""] for r in in_span if r["end_date"] == "1993-12-12"] == ["727"]


def test_text_pairing_matches_an_independent_scan(data_dir):
    ds = build("retrieval", ["Agriculture"], data_dir, text_source="both")["test"]
    texts = {}
    for kind in ("report", "search"):
        with open(data_dir / "timemmd" / "textual" / "Agriculture" / f"Agriculture_{kind}.csv", newline="") as fh:
            texts[kind] = list(csv.DictReader(fh))
    L = timemmd.DOMAIN_SETTINGS["Agriculture"].input_length
    for row in ds.select(range(0, len(ds), max(1, len(ds) // 4))):
        start = date.fromisoformat(row["start_timestamp"][:10])
        year, month = start.year + (start.month - 1 + L) // 12, (start.month - 1 + L) % 12 + 1
        end = (date(year, month, 1) - timedelta(days=1)).isoformat()
        parts = []
        for kind in ("report", "search"):
            candidates = [
                (r["end_date"], r["start_date"], i, r["fact"].strip())
                for i, r in enumerate(texts[kind])
                if start.isoformat() <= r["end_date"] <= end and r["fact"].strip() not in ("", "NA")
            ]
            if candidates:
                parts.append(max(candidates)[3])
        assert row["text"] == "\n\n".join(parts)
        assert row["text"] != ""  # retrieval drops windows without text


def test_missing_texts():
    for missing in ("", "  ", "NA", "NA;NA", "NA\n\nNote: the results are old.", None, float("nan")):
        assert is_missing_text(missing)
    for text in ("NAFTA was signed.", "NASA reported a record.", "Prices rose."):
        assert not is_missing_text(text)


def test_security_report_has_no_text(data_dir):
    dd = build("forecasting", ["Security"], data_dir, text_source="report", max_windows_per_split=3)
    assert all(t == "" for split in dd.values() for t in split["text"])
    assert len(build("retrieval", ["Security"], data_dir, text_source="report")["train"]) == 0


def test_train_statistics_match_the_csv(data_dir):
    rows = sorted(numeric_rows(data_dir, "Energy"), key=lambda r: r["start_date"])
    train = np.array([float(r["OT"]) for r in rows[: int(len(rows) * 0.7)]])
    stats = timemmd.train_statistics(["Energy"], data_dir)["Energy"]["OT"]
    assert stats["mean"] == pytest.approx(train.mean()) and stats["std"] == pytest.approx(train.std())
    dd = build("forecasting", ["Energy"], data_dir, max_windows_per_split=2)
    assert timemmd.load_statistics(dd["test"])["Energy"]["OT"]["mean"] == pytest.approx(train.mean())
    card = timemmd.dataset_card(dd, "forecasting")
    assert "train_statistics" in card and "odc-by" in card


def test_all_channels_option(data_dir):
    ds = build("forecasting", ["Energy"], data_dir, channels="all", max_windows_per_split=2)["train"]
    header = next(csv.reader(open(data_dir / "timemmd" / "numerical" / "Energy" / "Energy.csv", newline="")))
    measurement_columns = [c for c in header if c not in ("date", "start_date", "end_date")]
    assert ds[0]["channel_names"][0] == "OT"
    assert sorted(ds[0]["channel_names"]) == sorted(measurement_columns)
    assert len(ds[0]["past_values"][0]) == len(measurement_columns)


def copy_domain(data_dir: Path, tmp_path: Path, domain: str) -> Path:
    for part in ("numerical", "textual"):
        shutil.copytree(data_dir / "timemmd" / part / domain, tmp_path / "timemmd" / part / domain)
    return tmp_path


def edit_file(path: Path, edit) -> None:
    path.write_text(edit(path.read_text()))


def test_missing_column_is_named(data_dir, tmp_path):
    broken = copy_domain(data_dir, tmp_path, "Security")
    edit_file(broken / "timemmd/numerical/Security/Security.csv", lambda t: t.replace("date,OT,", "date,value,", 1))
    with pytest.raises(TimeMMDFormatError, match=r"Security\.csv lacks column\(s\) \['OT'\]"):
        build("forecasting", ["Security"], broken)


def test_unparseable_date_names_file_and_row(data_dir, tmp_path):
    broken = copy_domain(data_dir, tmp_path, "Security")
    path = broken / "timemmd/numerical/Security/Security.csv"
    lines = path.read_text().splitlines(keepends=True)
    fields = lines[4].split(",")
    assert lines[0].split(",")[2] == "start_date"
    fields[2] = "Jan 1999"
    lines[4] = ",".join(fields)
    path.write_text("".join(lines))
    with pytest.raises(TimeMMDFormatError, match=r"Security\.csv: data row 4 has start_date='Jan 1999'"):
        read_numeric("Security", broken)


def test_truncated_text_file_is_named(data_dir, tmp_path):
    broken = copy_domain(data_dir, tmp_path, "Energy")
    path = broken / "timemmd/textual/Energy/Energy_search.csv"
    text = path.read_text()
    path.write_text(text[: text.index("\n1200,") + 9])  # the last row stops inside its start date
    with pytest.raises(TimeMMDFormatError, match=r"Energy_search\.csv.*truncated"):
        build("forecasting", ["Energy"], broken)


def test_bad_text_date_names_text_row(data_dir, tmp_path):
    broken = copy_domain(data_dir, tmp_path, "Security")
    path = broken / "timemmd/textual/Security/Security_search.csv"
    lines = path.read_text().splitlines(keepends=True)
    assert lines[1].startswith("0,")
    lines[1] = lines[1].replace(lines[1].split(",")[2], "2099-13-45", 1)
    path.write_text("".join(lines))
    with pytest.raises(TimeMMDFormatError, match=r"Security_search\.csv: text row 1 .*2099-13-45"):
        build("retrieval", ["Security"], broken)


def test_cli_help_and_failed_build_writes_nothing(data_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0 and "--text-source" in capsys.readouterr().out
    broken = copy_domain(data_dir, tmp_path / "data", "Security")
    edit_file(broken / "timemmd/numerical/Security/Security.csv", lambda t: t.replace("date,OT,", "date,value,", 1))
    out = tmp_path / "out"
    with pytest.raises(TimeMMDFormatError):
        main(["--domains", "Security", "--data-dir", str(broken), "--output-dir", str(out)])
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_cli_writes_dataset(data_dir, tmp_path):
    out = tmp_path / "out"
    main(["--domains", "Security", "--config", "retrieval", "--data-dir", str(data_dir), "--output-dir", str(out), "--parquet"])
    assert (out / "README.md").is_file() and list((out / "data").glob("train-*.parquet"))


def test_standardize_uses_each_row_domain_and_channel_statistics():
    from datasets import Dataset

    rows = Dataset.from_dict(
        {
            "domain": ["A", "B"],
            "channel_names": [["OT"], ["OT"]],
            "past_values": [[[1.0], [3.0]], [[10.0], [20.0]]],
            "future_values": [[[5.0]], []],
        }
    )
    stats = {"A": {"OT": {"mean": 1.0, "std": 2.0}}, "B": {"OT": {"mean": 10.0, "std": 10.0}}}
    out = timemmd.standardize(rows, stats)
    assert out[0]["past_values"] == [[0.0], [1.0]] and out[0]["future_values"] == [[2.0]]
    assert out[1]["past_values"] == [[0.0], [1.0]] and out[1]["future_values"] == []


def test_non_positive_stride_and_window_cap_are_refused(data_dir, tmp_path):
    for bad in (0, -3, 1.5, True):
        with pytest.raises(ValueError, match="stride must be a positive integer"):
            build("retrieval", ["Security"], data_dir, stride=bad)
    with pytest.raises(ValueError, match="max_windows_per_split must be a positive integer"):
        build("retrieval", ["Security"], data_dir, max_windows_per_split=0)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"stride must be a positive integer .*got 0"):
        main(["--domains", "Security", "--stride", "0", "--data-dir", str(data_dir), "--output-dir", str(out)])
    assert not out.exists()
    # an explicit stride is used as given
    data = build("retrieval", ["Security"], data_dir, stride=3, max_windows_per_split=2)
    assert 0 < len(data["train"]) <= 2
