"""Deterministic text descriptions of time series (channel texts, sample texts, SERAF templates).

The TRACE paper had an LLM write one text per channel; this package uses a rule-based describer
instead, so that datasets are reproducible and buildable offline. Everything here is pure numpy
and fully deterministic: the same input always gives the same text.

Missing values are NaN. Statistics are computed over the observed (non-NaN) points only.

Channel-level pattern (`classify_pattern`)
------------------------------------------
Let `x` be the observed values (in time order), `scale = std(x)` (population standard deviation
of the levels) and `robust_scale = 1.4826 * median(|x - median(x)|)` (the MAD scaled to a
Gaussian standard deviation; `scale` is used instead when the MAD is 0, e.g. a mostly-zero
precipitation series).

* **Trend** — robust slope: the Theil–Sen estimator (median of all pairwise slopes
  `(x_j - x_i) / (t_j - t_i)`, computed on at most `MAX_THEIL_SEN_POINTS` = 256 evenly spaced
  observed points) times the time span of the observed points gives the change over the window;
  relative to the series' robust scale `r = change / robust_scale`:
  ``up`` if `r >= TREND_THRESHOLD` (1.0), ``down`` if `r <= -TREND_THRESHOLD`, else ``stable``.
  A linear ramp has `r = 4 / 1.4826 ~ 2.7`; a series wandering around a constant level has
  `|r| << 1`; a few outliers change neither the slope nor the scale much.
* **Volatility** — the standard deviation of the step-to-step differences of the observed
  values relative to the scale, `v = std(diff(x)) / scale`: ``low`` if `v < VOLATILITY_LOW`
  (0.25), ``high`` if `v >= VOLATILITY_HIGH` (0.75), else ``medium``. White noise has
  `v = sqrt(2) ~ 1.41` (high), a smooth daily cycle sampled hourly ~0.26, a straight line 0 (low).
* Constant series (`scale <= 1e-12 * max(1, |mean|)`), series with fewer than 3 observed
  points, and all-NaN series are ``stable`` / ``low``.

Channel text (`describe_channel`)
---------------------------------
``"<name> (<unit>): trend up, volatility low; mean m, min a at <when>, max b at <when>;
k% missing."`` — `<when>` is the timestamp of the extreme when timestamps are given, else the
step index. An all-NaN channel is described as having no observations.

Weather keywords (`weather_keywords`), on the 7 TRACE weather channels in SI units
-----------------------------------------------------------------------------------------
Channel names: ``temperature`` (°C), ``precipitation`` (mm per step), ``relative_humidity`` (%),
``visibility`` (m), ``wind_u`` / ``wind_v`` (m/s, eastward / northward), ``sky_code`` (NCEI sky
cover code of the most covered layer: 0 clear, 2 few, 4 scattered, 7 broken, 8 overcast,
9 sky obscured). A keyword is only considered when its channels have at least one observation.

* **Clear** — median sky_code <= 2 (few clouds or less).
* **Cloudy** — median sky_code >= 7 (broken or overcast).
* A step is *wet* when precipitation >= `WET_STEP_MM` = 0.25 mm (0.01 in, the smallest measured
  amount; a trace counts as 0). It is *cold* when temperature <= `SNOW_MAX_TEMP_C` = 1 °C.
* **Rainy** — at least `WET_SHARE` = 10 % of the steps with a precipitation observation are wet,
  and most wet steps are not cold (temperature > 1 °C or unknown).
* **Snowy** — the same share of wet steps, and most wet steps are cold.
* **Windy** — the 90th percentile of the wind speed `sqrt(u^2 + v^2)` >= 10.8 m/s (Beaufort 6,
  "strong breeze").
* **Foggy** — at least 5 % of the visibility observations are below 1000 m (the WMO fog
  visibility).
* **Hot** — mean temperature >= 25 °C. **Cold** — mean temperature <= 0 °C.
* **Humid** — mean relative humidity >= 80 %.
* **Stormy** — at least one step that is both wet and has wind speed >= 10.8 m/s.

Keywords are returned in the fixed order of `WEATHER_KEYWORDS`.

SERAF template (`seraf_template`)
---------------------------------
The SERAF forecaster's semantic retrieval describes each window by its time period, its season
(meteorological, northern hemisphere: DJF winter, MAM spring, JJA summer, SON autumn, taken at
the middle step) and the *main* trend and volatility: the most frequent channel-level pattern
over the observed channels (a tie goes to the pattern that appears first in channel order).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

__all__ = [
    "MAX_THEIL_SEN_POINTS",
    "TREND_THRESHOLD",
    "VOLATILITY_HIGH",
    "VOLATILITY_LOW",
    "WEATHER_CHANNELS",
    "WEATHER_KEYWORDS",
    "classify_pattern",
    "describe_channel",
    "describe_sample",
    "make_timestamps",
    "seraf_template",
    "weather_keywords",
]

MAX_THEIL_SEN_POINTS = 256
TREND_THRESHOLD = 1.0
VOLATILITY_LOW = 0.25
VOLATILITY_HIGH = 0.75

WET_STEP_MM = 0.25
SNOW_MAX_TEMP_C = 1.0
WET_SHARE = 0.10
WINDY_SPEED_MS = 10.8
WINDY_QUANTILE = 0.9
FOG_VISIBILITY_M = 1000.0
FOG_SHARE = 0.05
HOT_MEAN_C = 25.0
COLD_MEAN_C = 0.0
HUMID_MEAN_PCT = 80.0
CLEAR_MAX_SKY = 2.0
CLOUDY_MIN_SKY = 7.0

WEATHER_CHANNELS = (
    "temperature",
    "precipitation",
    "relative_humidity",
    "visibility",
    "wind_u",
    "wind_v",
    "sky_code",
)
WEATHER_UNITS = {
    "temperature": "°C",
    "precipitation": "mm",
    "relative_humidity": "%",
    "visibility": "m",
    "wind_u": "m/s",
    "wind_v": "m/s",
    "sky_code": "code",
}
WEATHER_KEYWORDS = ("Clear", "Cloudy", "Rainy", "Snowy", "Windy", "Foggy", "Hot", "Cold", "Humid", "Stormy")

def _as_1d(values, what: str = "values") -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional (one channel), got shape {arr.shape}.")
    return arr


def _as_2d(values) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(
            f"values must be (length, channels), got shape {arr.shape}; add a channel axis with values[:, None]."
        )
    return arr


def _check_channel_names(arr: np.ndarray, channel_names: Sequence[str]) -> list[str]:
    names = list(channel_names)
    if len(names) != arr.shape[1]:
        raise ValueError(
            f"Got {len(names)} channel names {names} for values of shape {arr.shape} (length, channels); give one "
            "name per channel, in the order of the last axis."
        )
    return names


def _theil_sen_slope(t: np.ndarray, x: np.ndarray) -> float:
    if len(x) > MAX_THEIL_SEN_POINTS:
        # Evenly spaced subsample keeps the estimator O(256^2) and deterministic.
        idx = np.unique(np.linspace(0, len(x) - 1, MAX_THEIL_SEN_POINTS).round().astype(int))
        t, x = t[idx], x[idx]
    i, j = np.triu_indices(len(x), k=1)
    dt = t[j] - t[i]
    return float(np.median((x[j] - x[i]) / dt))


def classify_pattern(values) -> tuple[str, str]:
    """Classify one channel as (trend, volatility).

    Args:
        values: 1-D array-like, NaN = missing.

    Returns:
        `(trend, volatility)` with trend in {"up", "down", "stable"} and volatility in
        {"high", "medium", "low"}; see the module docstring for the thresholds.
    """
    arr = _as_1d(values)
    observed = ~np.isnan(arr)
    x = arr[observed]
    if len(x) < 3:
        return "stable", "low"
    scale = float(np.std(x))
    if scale <= 1e-12 * max(1.0, abs(float(np.mean(x)))):
        return "stable", "low"
    t = np.flatnonzero(observed).astype(np.float64)
    change = _theil_sen_slope(t, x) * (t[-1] - t[0])
    robust_scale = 1.4826 * float(np.median(np.abs(x - np.median(x))))
    ratio = change / (robust_scale if robust_scale > 0 else scale)
    trend = "up" if ratio >= TREND_THRESHOLD else "down" if ratio <= -TREND_THRESHOLD else "stable"
    roughness = float(np.std(np.diff(x))) / scale
    volatility = "low" if roughness < VOLATILITY_LOW else "high" if roughness >= VOLATILITY_HIGH else "medium"
    return trend, volatility


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:.0f}"
    if magnitude >= 1:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _fmt_time(ts) -> str:
    ts = np.datetime64(ts, "m")
    return str(ts).replace("T", " ")


def describe_channel(values, name: str, timestamps=None, unit: str | None = None) -> str:
    """Describe one channel in one short sentence: trend, volatility, extremes and missingness.

    Args:
        values: 1-D array-like, NaN = missing.
        name: channel name used at the start of the text.
        timestamps: optional sequence (same length) of datetime-likes; extremes are reported at
            their timestamps, else at their step index.
        unit: unit shown after the name; defaults to the SI unit of the TRACE weather channels when
            `name` is one of them, else no unit.

    Returns:
        e.g. ``"temperature (°C): trend up, volatility medium; mean -3.2, min -12.0 at
        2022-01-05 06:00, max 4.1 at 2022-01-07 14:00; 2% missing."``
    """
    arr = _as_1d(values)
    if timestamps is not None and len(timestamps) != len(arr):
        raise ValueError(
            f"Got {len(timestamps)} timestamps for {len(arr)} values of channel {name!r}; pass one timestamp per "
            "value, or timestamps=None to report extremes by step."
        )
    unit = WEATHER_UNITS.get(name) if unit is None else unit
    label = f"{name} ({unit})" if unit else name
    observed = ~np.isnan(arr)
    if not observed.any():
        return f"{label}: no observations in this window."
    trend, volatility = classify_pattern(arr)
    x = np.where(observed, arr, np.nan)
    i_min, i_max = int(np.nanargmin(x)), int(np.nanargmax(x))

    def when(i: int) -> str:
        return _fmt_time(timestamps[i]) if timestamps is not None else f"step {i + 1} of {len(arr)}"

    missing = 1.0 - observed.mean()
    missing_text = "no missing values" if missing == 0 else f"{missing:.0%} missing"
    return (
        f"{label}: trend {trend}, volatility {volatility}; mean {_fmt(float(np.nanmean(x)))}, "
        f"min {_fmt(float(x[i_min]))} at {when(i_min)}, max {_fmt(float(x[i_max]))} at {when(i_max)}; "
        f"{missing_text}."
    )


def _channel(values: np.ndarray, names: list[str], name: str) -> np.ndarray | None:
    if name not in names:
        return None
    col = values[:, names.index(name)]
    return col if (~np.isnan(col)).any() else None


def weather_keywords(values, channel_names: Sequence[str]) -> list[str]:
    """Weather keywords of a (length, channels) window of TRACE weather channels in SI units.

    Channels are found by name (see `WEATHER_CHANNELS`); other channels are ignored and a keyword
    whose channels are absent or all-NaN is never returned. Thresholds: module docstring.
    """
    arr = _as_2d(values)
    names = _check_channel_names(arr, channel_names)
    found: set[str] = set()
    temp = _channel(arr, names, "temperature")
    precip = _channel(arr, names, "precipitation")
    rh = _channel(arr, names, "relative_humidity")
    vis = _channel(arr, names, "visibility")
    sky = _channel(arr, names, "sky_code")
    u, v = _channel(arr, names, "wind_u"), _channel(arr, names, "wind_v")
    speed = np.hypot(u, v) if u is not None and v is not None else None
    if speed is not None and np.isnan(speed).all():
        speed = None

    if sky is not None:
        median_sky = float(np.nanmedian(sky))
        if median_sky <= CLEAR_MAX_SKY:
            found.add("Clear")
        if median_sky >= CLOUDY_MIN_SKY:
            found.add("Cloudy")
    wet = None
    if precip is not None:
        has_precip = ~np.isnan(precip)
        wet = has_precip & (np.nan_to_num(precip, nan=0.0) >= WET_STEP_MM)
        if wet.sum() >= WET_SHARE * has_precip.sum() and wet.any():
            cold = np.zeros_like(wet) if temp is None else (np.nan_to_num(temp, nan=np.inf) <= SNOW_MAX_TEMP_C)
            cold_wet = int((wet & cold).sum())
            found.add("Snowy" if cold_wet > wet.sum() - cold_wet else "Rainy")
    if speed is not None:
        if float(np.nanquantile(speed, WINDY_QUANTILE)) >= WINDY_SPEED_MS:
            found.add("Windy")
        if wet is not None and (wet & (np.nan_to_num(speed, nan=0.0) >= WINDY_SPEED_MS)).any():
            found.add("Stormy")
    if vis is not None:
        observed_vis = vis[~np.isnan(vis)]
        if (observed_vis < FOG_VISIBILITY_M).mean() >= FOG_SHARE:
            found.add("Foggy")
    if temp is not None:
        mean_temp = float(np.nanmean(temp))
        if mean_temp >= HOT_MEAN_C:
            found.add("Hot")
        if mean_temp <= COLD_MEAN_C:
            found.add("Cold")
    if rh is not None and float(np.nanmean(rh)) >= HUMID_MEAN_PCT:
        found.add("Humid")
    return [k for k in WEATHER_KEYWORDS if k in found]


_FREQ_RE = re.compile(r"^\s*(\d*)\s*([A-Za-z]+)\s*$")
_FREQ_UNITS = {
    "s": "s",
    "S": "s",
    "min": "m",
    "T": "m",
    "h": "h",
    "H": "h",
    "D": "D",
    "d": "D",
    "W": "W",
    "M": "M",
    "MS": "M",
    "ME": "M",
}
_FREQ_WORDS = {"s": "second", "m": "minute", "h": "hour", "D": "day", "W": "week", "M": "month"}


def _parse_freq(freq: str) -> tuple[int, str]:
    match = _FREQ_RE.match(freq or "")
    if not match or match.group(2) not in _FREQ_UNITS:
        raise ValueError(
            f"Unsupported frequency {freq!r}; expected a pandas-style string such as '1h', '4h', '1D', '15min', "
            "'7D' or 'MS'."
        )
    return int(match.group(1) or 1), _FREQ_UNITS[match.group(2)]


def make_timestamps(start_timestamp: str, freq: str, length: int) -> np.ndarray:
    """`length` timestamps (numpy datetime64) from `start_timestamp` every `freq` (e.g. "1h", "1D", "MS").

    Monthly frequencies ("M", "MS", "ME") give the first day of each month from the start's month.
    """
    count, unit = _parse_freq(freq)
    try:
        start = np.datetime64(str(start_timestamp).replace("Z", "").split("+")[0])
    except ValueError as err:
        raise ValueError(f"Cannot parse start_timestamp {start_timestamp!r}; expected ISO-8601.") from err
    if unit == "M":
        # Month lengths differ, so monthly steps are placed on the first day of each month.
        return (np.datetime64(start, "M") + count * np.arange(length)).astype("datetime64[s]")
    return start + np.arange(length) * np.timedelta64(count, unit)


def _freq_words(freq: str) -> str:
    count, unit = _parse_freq(freq)
    word = _FREQ_WORDS[unit]
    return f"{word}ly" if count == 1 and unit != "D" else "daily" if count == 1 else f"{count}-{word}"


def describe_sample(
    values,
    channel_names: Sequence[str],
    start_timestamp: str | None = None,
    freq: str | None = None,
) -> str:
    """Describe a (length, channels) window in a few sentences.

    The text starts with the weather keywords (when the window holds TRACE weather channels), then
    the period (when `start_timestamp` and `freq` are given) and one pattern per observed channel.

    Args:
        values: (length, channels) array-like, NaN = missing.
        channel_names: one name per channel.
        start_timestamp: ISO-8601 timestamp of the first step (optional).
        freq: pandas-style step ("1h", "4h", "1D", ...), needed with `start_timestamp`.
    """
    arr = _as_2d(values)
    names = _check_channel_names(arr, channel_names)
    parts = []
    keywords = weather_keywords(arr, names)
    if keywords:
        parts.append("Weather: " + ", ".join(keywords) + ".")
    if start_timestamp and freq:
        stamps = make_timestamps(start_timestamp, freq, len(arr))
        parts.append(
            f"{len(arr)} {_freq_words(freq)} steps from {_fmt_time(stamps[0])} to {_fmt_time(stamps[-1])}."
        )
    else:
        parts.append(f"{len(arr)} steps.")
    patterns = []
    for c, name in enumerate(names):
        if np.isnan(arr[:, c]).all():
            continue
        trend, volatility = classify_pattern(arr[:, c])
        patterns.append(f"{name} {trend} ({volatility} volatility)")
    parts.append(("Channels: " + "; ".join(patterns) + ".") if patterns else "No channel has observations.")
    return " ".join(parts)


def _season(month: int) -> str:
    return {12: "winter", 1: "winter", 2: "winter", 3: "spring", 4: "spring", 5: "spring"}.get(
        month, "summer" if month in (6, 7, 8) else "autumn"
    )


def _most_frequent(items: list[str]) -> str:
    counts = Counter(items)
    best = max(counts.values())
    return next(item for item in items if counts[item] == best)


def seraf_template(values, start_timestamp: str, freq: str) -> str:
    """SERAF's template description of a window: time period, season, main trend, main volatility.

    Args:
        values: (length, channels) array-like (a 1-D array is one channel), NaN = missing.
        start_timestamp: ISO-8601 timestamp of the first step.
        freq: pandas-style step ("1h", "15min", "1D", ...).

    Returns:
        e.g. ``"Time period: 2016-07-01 00:00 to 2016-07-30 23:00 (720 hourly steps). Season: summer.
        Main trend: up. Main volatility: low."``
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    arr = _as_2d(arr)
    stamps = make_timestamps(start_timestamp, freq, len(arr))
    middle = stamps[len(stamps) // 2]
    month = int(str(np.datetime64(middle, "M"))[5:7])
    patterns = [classify_pattern(arr[:, c]) for c in range(arr.shape[1]) if (~np.isnan(arr[:, c])).any()]
    trend = _most_frequent([p[0] for p in patterns]) if patterns else "stable"
    volatility = _most_frequent([p[1] for p in patterns]) if patterns else "low"
    return (
        f"Time period: {_fmt_time(stamps[0])} to {_fmt_time(stamps[-1])} ({len(arr)} {_freq_words(freq)} steps). "
        f"Season: {_season(month)}. Main trend: {trend}. Main volatility: {volatility}."
    )
