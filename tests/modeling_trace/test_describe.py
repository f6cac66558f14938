"""Tests for the deterministic describer (`modeling_trace.describe`)."""

import numpy as np
import pytest

from modeling_trace import describe as d
from modeling_trace.describe import (
    WEATHER_CHANNELS,
    classify_pattern,
    describe_channel,
    describe_sample,
    make_timestamps,
    seraf_template,
    weather_keywords,
)


def weather_window(length=48, **channels):
    """A (length, 7) window of the TRACE weather channels, NaN except the channels given."""
    values = np.full((length, len(WEATHER_CHANNELS)), np.nan)
    for name, column in channels.items():
        values[:, WEATHER_CHANNELS.index(name)] = column
    return values


# --- channel patterns -------------------------------------------------------------------------


def test_rising_line_is_up_and_low_volatility():
    assert classify_pattern(np.linspace(-5.0, 20.0, 168)) == ("up", "low")


def test_falling_line_is_down():
    assert classify_pattern(np.linspace(3.0, -1.0, 50))[0] == "down"


def test_constant_is_stable_low():
    assert classify_pattern(np.full(100, 7.5)) == ("stable", "low")
    assert classify_pattern(np.zeros(10)) == ("stable", "low")


def test_white_noise_is_stable_high():
    for seed in range(5):  # not one lucky draw
        assert classify_pattern(np.random.default_rng(seed).normal(size=500)) == ("stable", "high")


def test_trend_is_robust_to_outliers():
    x = np.linspace(0.0, 1.0, 100)
    x[[5, 50, 90]] = [-100.0, 100.0, -100.0]
    assert classify_pattern(x)[0] == "up"


def test_medium_volatility_between_thresholds():
    # A daily cycle sampled hourly: differences are about 0.26 of the level's spread.
    x = np.sin(np.arange(24 * 14) * 2 * np.pi / 24)
    trend, volatility = classify_pattern(x)
    assert trend == "stable"
    assert volatility == "medium"


def test_nan_handling():
    x = np.linspace(0.0, 10.0, 60)
    x[::3] = np.nan
    assert classify_pattern(x) == ("up", "low")
    assert classify_pattern(np.full(20, np.nan)) == ("stable", "low")
    assert classify_pattern([1.0, np.nan]) == ("stable", "low")


def test_classify_pattern_rejects_2d():
    with pytest.raises(ValueError, match="one-dimensional"):
        classify_pattern(np.zeros((3, 2)))


# --- channel text -----------------------------------------------------------------------------


def test_describe_channel_extremes_and_missingness():
    x = np.array([3.0, np.nan, -2.0, 8.0, np.nan, 1.0, 0.5, 2.0, np.nan, 4.0])
    stamps = make_timestamps("2022-01-01T00:00:00", "1h", len(x))
    text = describe_channel(x, "temperature", timestamps=stamps)
    assert text.startswith("temperature (°C):")
    assert "min -2.0 at 2022-01-01 02:00" in text
    assert "max 8.0 at 2022-01-01 03:00" in text
    assert "30% missing" in text


def test_describe_channel_without_timestamps_uses_steps():
    text = describe_channel([1.0, 5.0, 2.0], "load", unit="")
    assert text.startswith("load:")
    assert "max 5.0 at step 2 of 3" in text
    assert "no missing values" in text


def test_describe_channel_all_nan():
    assert "no observations" in describe_channel([np.nan] * 4, "visibility")


def test_describe_channel_length_mismatch():
    with pytest.raises(ValueError, match="timestamps"):
        describe_channel([1.0, 2.0], "x", timestamps=make_timestamps("2020-01-01", "1h", 3))


# --- weather keywords: each threshold from both sides -----------------------------------------


@pytest.mark.parametrize(
    ("channels", "present", "absent"),
    [
        ({"sky_code": np.full(48, 0.0)}, "Clear", "Cloudy"),
        ({"sky_code": np.full(48, 2.0)}, "Clear", "Cloudy"),
        ({"sky_code": np.full(48, 4.0)}, None, "Clear"),
        ({"sky_code": np.full(48, 8.0)}, "Cloudy", "Clear"),
        ({"temperature": np.full(48, d.HOT_MEAN_C + 0.5)}, "Hot", "Cold"),
        ({"temperature": np.full(48, d.HOT_MEAN_C - 0.5)}, None, "Hot"),
        ({"temperature": np.full(48, d.COLD_MEAN_C - 0.5)}, "Cold", "Hot"),
        ({"temperature": np.full(48, d.COLD_MEAN_C + 0.5)}, None, "Cold"),
        ({"relative_humidity": np.full(48, d.HUMID_MEAN_PCT + 1)}, "Humid", None),
        ({"relative_humidity": np.full(48, d.HUMID_MEAN_PCT - 1)}, None, "Humid"),
    ],
)
def test_level_keywords(channels, present, absent):
    keywords = weather_keywords(weather_window(**channels), WEATHER_CHANNELS)
    if present:
        assert present in keywords
    if absent:
        assert absent not in keywords


def _precip(wet_steps, length=48, amount=1.0):
    p = np.zeros(length)
    p[:wet_steps] = amount
    return p


def test_rainy_and_snowy_follow_temperature():
    wet = int(np.ceil(d.WET_SHARE * 48))
    warm = weather_keywords(weather_window(precipitation=_precip(wet), temperature=np.full(48, 5.0)), WEATHER_CHANNELS)
    cold = weather_keywords(weather_window(precipitation=_precip(wet), temperature=np.full(48, -3.0)), WEATHER_CHANNELS)
    assert "Rainy" in warm and "Snowy" not in warm
    assert "Snowy" in cold and "Rainy" not in cold


def test_rainy_needs_enough_wet_steps_and_amount():
    wet = int(np.ceil(d.WET_SHARE * 48))
    few = weather_keywords(weather_window(precipitation=_precip(wet - 1)), WEATHER_CHANNELS)
    trace = weather_keywords(weather_window(precipitation=_precip(wet, amount=d.WET_STEP_MM / 2)), WEATHER_CHANNELS)
    assert "Rainy" not in few
    assert "Rainy" not in trace


def test_windy_foggy_stormy():
    strong = np.full(48, d.WINDY_SPEED_MS + 1.0)
    light = np.full(48, d.WINDY_SPEED_MS - 1.0)
    zero = np.zeros(48)
    assert "Windy" in weather_keywords(weather_window(wind_u=strong, wind_v=zero), WEATHER_CHANNELS)
    # Wind speed is the vector magnitude: 0.8 of the threshold on both axes is above it.
    diagonal = np.full(48, 0.8 * d.WINDY_SPEED_MS)
    assert "Windy" in weather_keywords(weather_window(wind_u=diagonal, wind_v=-diagonal), WEATHER_CHANNELS)
    assert "Windy" not in weather_keywords(weather_window(wind_u=light, wind_v=zero), WEATHER_CHANNELS)

    fog = np.full(48, 16000.0)
    fog[:3] = 400.0  # 3/48 = 6% >= 5%
    assert "Foggy" in weather_keywords(weather_window(visibility=fog), WEATHER_CHANNELS)
    fog[2] = 16000.0  # 2/48 = 4%
    assert "Foggy" not in weather_keywords(weather_window(visibility=fog), WEATHER_CHANNELS)

    gusty_rain = weather_window(precipitation=_precip(1), wind_u=strong, wind_v=zero)
    assert "Stormy" in weather_keywords(gusty_rain, WEATHER_CHANNELS)
    assert "Stormy" not in weather_keywords(weather_window(precipitation=_precip(1), wind_u=light, wind_v=zero), WEATHER_CHANNELS)


def test_keywords_ignore_absent_channels_and_keep_order():
    values = weather_window(temperature=np.full(48, -10.0), sky_code=np.full(48, 8.0), relative_humidity=np.full(48, 95.0))
    assert weather_keywords(values, WEATHER_CHANNELS) == ["Cloudy", "Cold", "Humid"]
    assert weather_keywords(np.full((10, 7), np.nan), WEATHER_CHANNELS) == []
    assert weather_keywords(np.ones((10, 2)), ["a", "b"]) == []


# --- sample text and SERAF template -----------------------------------------------------------


def test_describe_sample_mentions_keywords_period_and_channels():
    values = weather_window(168, temperature=np.linspace(-10, -2, 168), sky_code=np.full(168, 8.0))
    text = describe_sample(values, WEATHER_CHANNELS, "2022-01-01T00:00:00", "1h")
    assert text.startswith("Weather: Cloudy, Cold.")
    assert "168 hourly steps from 2022-01-01 00:00 to 2022-01-07 23:00" in text
    assert "temperature up" in text
    assert "visibility" not in text  # all-NaN channels are left out


def test_describe_sample_shape_errors():
    with pytest.raises(ValueError, match="channel names"):
        describe_sample(np.zeros((5, 2)), ["a"])
    with pytest.raises(ValueError, match="length, channels"):
        describe_sample(np.zeros(5), ["a"])


def test_determinism():
    values = np.random.default_rng(1234).normal(size=(100, 7)) * [5, 1, 10, 1000, 3, 3, 2] + [10, 0.5, 70, 9000, 0, 0, 4]
    values[::7, 2] = np.nan
    first = (describe_sample(values, WEATHER_CHANNELS, "2020-05-01", "4h"), seraf_template(values, "2020-05-01", "4h"))
    second = (describe_sample(values.copy(), WEATHER_CHANNELS, "2020-05-01", "4h"), seraf_template(values.copy(), "2020-05-01", "4h"))
    assert first == second


def test_seraf_template_majority_pattern_and_season():
    t = np.arange(720, dtype=float)
    values = np.stack([t, 2 * t + 1, np.full(720, 3.0)], axis=1)  # two rising channels, one constant
    text = seraf_template(values, "2016-07-01 00:00:00", "1h")
    assert text == (
        "Time period: 2016-07-01 00:00 to 2016-07-30 23:00 (720 hourly steps). Season: summer. "
        "Main trend: up. Main volatility: low."
    )
    assert "Season: winter" in seraf_template(t, "2016-01-01", "1D")
    assert "Season: autumn" in seraf_template(t[:30], "2016-10-01", "1D")
    assert "(30 daily steps)" in seraf_template(t[:30], "2016-10-01", "1D")


def test_make_timestamps_and_bad_freq():
    stamps = make_timestamps("2022-03-01T00:00:00Z", "4h", 3)
    assert [str(s) for s in stamps] == ["2022-03-01T00:00:00", "2022-03-01T04:00:00", "2022-03-01T08:00:00"]
    assert str(make_timestamps("2020-01-15", "MS", 3)[-1]).startswith("2020-03-01")
    with pytest.raises(ValueError, match="Unsupported frequency"):
        make_timestamps("2020-01-01", "fortnight", 3)
