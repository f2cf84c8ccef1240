"""The forecast: its seasonal quantile and today's correction, its fallbacks, and what the
forecast preset does with it (pre-warm, hold), by example and as properties."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbbcore.config import ConfigError, load_settings
from bbbscaler.explain import forecast_lines
from bbbscaler.model import Action, Decision, FleetSnapshot
from bbbscaler.policy import DemandHistory, Forecast, History, PolicyConfig, decide, forecast_from
from bbbscaler.policy.forecast import STEP, WEEK, quantile
from bbbscaler.settings import ScalerSettings
from tests.scaler_fleets import T0, required_settings, serving, snapshot
from tests.test_policy_properties import ROUNDS, Round, check_terminations, forecast_of

FORECAST = PolicyConfig.preset_values("forecast")
PER_WEEK = round(WEEK / STEP)


def weeks_of(
    shape: list[float], factors: list[float], today: float | None = None, upto: float = T0
) -> DemandHistory:
    """Whole weeks before ``upto`` (the last ``len(factors)``) whose day repeats ``shape``
    (one value per step from midnight) times each week's factor; then today up to
    ``upto`` at ``today`` times the shape (None: no today)."""
    start = upto - len(factors) * WEEK
    values: list[float | None] = []
    day = round(86_400 / STEP)
    for factor in factors:
        values += [factor * shape[k % day % len(shape)] for k in range(PER_WEEK)]
    if today is not None:
        values.append(today * shape[0])
    return DemandHistory(start + STEP, STEP, tuple(values[1:]))


def test_quantile() -> None:
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.5) == pytest.approx(2.5)
    assert quantile([4.0, 1.0, 3.0, 2.0], 0.75) == pytest.approx(3.25)
    assert quantile([7.0], 0.75) == 7.0


def test_a_holiday_week_does_not_pull_the_forecast_down() -> None:
    # Four weeks at 10 nodes of demand, one of them a holiday at 2: the 75th percentile
    # stays at 10, where the mean would say 8.
    history = weeks_of([10.0], [1.0, 0.2, 1.0, 1.0], today=1.0)
    made = forecast_from(history, T0, FORECAST)
    assert made.usable
    assert made.weeks == 4
    assert made.now() == pytest.approx(10.0)
    assert made.correction == pytest.approx(1.0)


@pytest.mark.parametrize(("today", "expected"), [(0.2, 0.2), (1.1, 1.1), (1.0, 1.0), (5.0, 2.0)])
def test_today_s_correction_is_multiplicative(today: float, expected: float) -> None:
    # The last hour ran at ``today`` of its seasonal forecast: a holiday at 20 % scales the
    # coming hour to 20 %, a term 10 % busier to 110 %; clipped at 2.
    weeks = [1.0, 1.0, 1.0, 1.0]
    history = weeks_of([10.0], weeks, upto=T0 - 3600)
    extra = tuple(10.0 * today for _ in range(12))
    history = dataclasses.replace(history, values=history.values + extra)
    made = forecast_from(history, T0, FORECAST)
    assert made.correction == pytest.approx(expected)
    assert made.peak(T0, T0 + 3600) == pytest.approx(10.0 * expected)


def test_a_night_is_no_evidence() -> None:
    # Expected demand under half a node over the window: today is not judged by it.
    history = weeks_of([0.2], [1.0, 1.0, 1.0], today=3.0)
    assert forecast_from(history, T0, FORECAST).correction == 1.0


def test_the_forecast_sees_the_ramp_coming() -> None:
    # Earlier weeks: quiet until 07:00, 10 nodes from 07:30. At 07:20 the forecast for the
    # next 20 minutes says 10.
    shape = [1.0] * 84 + [5.0] * 6 + [10.0] * 198
    now = T0 + 7 * 3600 + 20 * 60
    history = weeks_of(shape, [1.0, 1.0, 1.0])
    # Today so far exactly as the weeks before.
    values = list(history.values)
    while history.start + (len(values) - 1) * STEP < now:
        values.append(values[len(values) - PER_WEEK])
    history = dataclasses.replace(history, values=tuple(values))
    made = forecast_from(history, now, FORECAST)
    assert made.usable
    assert made.peak(now, now + 1200) == pytest.approx(10.0)
    assert made.now() == pytest.approx(5.0)


def test_short_and_stale_history_fall_back() -> None:
    one_week = weeks_of([10.0], [1.0], today=1.0)
    made = forecast_from(one_week, T0, FORECAST)
    assert (made.status, made.usable) == ("short", False)
    assert "at least 2" in made.reason
    assert forecast_from(DemandHistory(T0, STEP, ()), T0, FORECAST).status == "short"
    # The newest value is more than forecast_stale_after old: no correction can be made.
    history = weeks_of([10.0], [1.0, 1.0, 1.0], today=1.0)
    assert forecast_from(history, T0 + 901, FORECAST).status == "stale"
    assert forecast_from(history, T0 + 600, FORECAST).status == "ok"
    gaps = dataclasses.replace(history, values=(None,) * len(history.values))
    assert forecast_from(gaps, T0, FORECAST).status == "short"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0, 20) | st.none(), min_size=1, max_size=40),
    st.integers(PER_WEEK * 2 - 20, PER_WEEK * 2 + 10),
    st.floats(0, 20),
)
def test_the_forecast_reads_nothing_after_now(
    pattern: list[float | None], k: int, other: float
) -> None:
    """Walk-forward: whatever the history says after ``now``, the forecast is the same."""
    values = [pattern[i % len(pattern)] for i in range(PER_WEEK * 2 + 40)]
    history = DemandHistory(T0, STEP, tuple(values))
    now = T0 + k * STEP + 17.0
    first = forecast_from(history, now, dataclasses.replace(FORECAST, forecast_min_weeks=1))
    cut = history.index(now) + 1
    changed = values[:cut] + [other] * (len(values) - cut)
    again = forecast_from(
        dataclasses.replace(history, values=tuple(changed)),
        now,
        dataclasses.replace(FORECAST, forecast_min_weeks=1),
    )
    assert again == first


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0, 50) | st.just(math.nan), max_size=14),
    st.floats(-2000, 6000),
    st.floats(-2000, 6000),
)
def test_the_peak_is_the_highest_of_the_steps_it_overlaps(
    demand: list[float], begin: float, end: float
) -> None:
    """Forecast.peak answers from the running maximum made with the forecast when the range
    starts at or before its first step: the same value as the maximum over those steps."""
    f = Forecast(T0, "ok", "test", T0 - 100.0, STEP, tuple(demand), 1.0, 4)
    first = max(0, math.floor((T0 + begin - f.start) / STEP))
    last = min(len(demand) - 1, math.floor((T0 + end - f.start) / STEP))
    expected = max(f.demand[first : last + 1], default=0.0)
    got = f.peak(T0 + begin, T0 + end)
    assert got == expected or (math.isnan(got) and math.isnan(expected))
    # The running maximum is no part of the value: not compared, not shown.
    assert "highest" not in repr(f)


# --- the forecast preset ---------------------------------------------------------------------


def ahead(*demand: float, at: float = T0) -> Forecast:
    """A forecast of ``demand`` for the steps from the one containing ``at``."""
    return Forecast(at, "ok", "test", at - 100.0, STEP, demand, 1.0, 4)


def test_it_pre_warms_before_the_ramp() -> None:
    # Two quiet nodes; the forecast says 5 nodes of demand in the step that starts within
    # boot_time + margin: 5.05 / 0.72 -> 8 nodes now, so they serve when it comes.
    snap = snapshot(serving("a", cpu=0.1), serving("b", cpu=0.1))
    d = decide(snap, History(), ahead(0.2, 5.0), FORECAST, T0)
    assert (d.action, d.desired) == (Action.SCALE_OUT, 8)
    assert d.numbers["forecast_nodes"] == 8
    assert "forecast demand 5.00" in d.reason
    assert d.forecast_status == "ok"
    # Beyond boot_time + margin it waits.
    d = decide(snap, History(), ahead(0.2, 0.2, 5.0), FORECAST, T0)
    assert d.desired is None


def test_its_room_reason_names_the_headroom_it_used() -> None:
    # Two nodes at 90 %: no room below the target, so the room rule grows, with the
    # forecast's headroom (0.05), not the default preset's (0.15); the forecast wants less.
    snap = snapshot(serving("a", cpu=0.9), serving("b", cpu=0.9))
    d = decide(snap, History(), ahead(0.2, 0.2), FORECAST, T0)
    assert d.action is Action.SCALE_OUT
    assert d.numbers["headroom"] == FORECAST.forecast_headroom
    assert f"{FORECAST.forecast_headroom} headroom" in d.reason, d.reason


def test_it_holds_a_busy_node_the_forecast_needs_soon_but_drains_an_empty_one() -> None:
    config = dataclasses.replace(FORECAST, scale_in_after=0.0)
    nodes = [serving(f"n-{k}", cpu=0.1, meetings=1) for k in range(4)]
    idle = serving("idle", cpu=0.03, meetings=0)
    snap = snapshot(*nodes, idle)
    # Demand returns to 2.5 nodes in 20 minutes (4 nodes at 72 %): the busy nodes stay; the
    # empty one drains (a new one would serve within boot_time, long before).
    returning = ahead(0.4, 0.4, 0.4, 0.4, 2.5, 2.5, 2.5)
    d = decide(snap, History(), returning, config, T0)
    assert d.drain == ("idle",)
    assert d.numbers["keep_busy"] == 4
    # No return forecast: the reactive rule drains busy ones too.
    d = decide(snap, History(), ahead(0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4), config, T0)
    assert "idle" in d.drain
    assert len(d.drain) > 1


def test_explain_and_the_json_show_forecast_against_actual() -> None:
    from bbbscaler.controller import Round as ControllerRound
    from bbbscaler.explain import render

    snap = snapshot(serving("a", cpu=0.5))
    made = ahead(0.6, 3.0)
    d = decide(snap, History(), made, FORECAST, T0)
    text = render(snap, d, FORECAST)
    assert "forecast: ok (test): demand now 0.60 forecast, 0.50 actual" in text
    doc = ControllerRound(snap, d, (), False, made).as_json()["forecast"]
    assert doc["status"] == "ok"
    assert (doc["demand"], doc["actual_demand"], doc["lead_demand"]) == (0.6, 0.5, 3.0)
    short = Forecast.unavailable(T0, "short", "1 earlier week(s) cover the next hour")
    d = decide(snap, History(), short, FORECAST, T0)
    assert "forecast: short (1 earlier week(s) cover the next hour): the reactive rules" in (
        render(snap, d, FORECAST)
    )
    assert ControllerRound(snap, d, (), False, short).as_json()["forecast"]["nodes"] is None
    # Other presets say nothing of a forecast.
    plain = decide(snap, History(), None, PolicyConfig(), T0)
    assert "forecast" not in render(snap, plain, PolicyConfig())
    assert ControllerRound(snap, plain, (), False).as_json()["forecast"] is None


# --- properties ------------------------------------------------------------------------------

FORECAST_ROUNDS = ROUNDS.map(lambda r: (r[0], r[1], dataclasses.replace(r[2], preset="forecast")))


def _flat(snap: FleetSnapshot, made: Forecast) -> Forecast:
    return dataclasses.replace(made, demand=tuple(0.0 for _ in made.demand))


def _capacity_after(snap: FleetSnapshot, d: Decision) -> int:
    return max(snap.group.desired, d.desired or 0) + len(d.undrain)


@settings(max_examples=150, deadline=None)
@given(FORECAST_ROUNDS)
def test_the_forecast_only_adds_capacity_or_holds_it(data: Round) -> None:
    """Against the same rules with a forecast of no demand: never a drain, a termination or
    a smaller step up that the forecast caused."""
    snap, history, config = data
    made = forecast_of(snap, history)
    if not made.usable:
        return
    with_it = decide(snap, history, made, config, T0)
    without = decide(snap, history, _flat(snap, made), config, T0)
    assert set(with_it.drain) <= set(without.drain)
    assert set(with_it.terminate) <= set(without.terminate)
    assert _capacity_after(snap, with_it) >= _capacity_after(snap, without)
    check_terminations(snap, config, with_it)


@settings(max_examples=150, deadline=None)
@given(FORECAST_ROUNDS, st.sampled_from(["short", "stale", "unreadable", "off"]))
def test_without_a_usable_forecast_it_is_the_default_preset(data: Round, status: str) -> None:
    snap, history, config = data
    unusable = Forecast.unavailable(T0, status, "why")  # type: ignore[arg-type]
    fell_back = decide(snap, history, unusable, config, T0)
    assert (fell_back.forecast_status, fell_back.forecast_reason) == (status, "why")
    default = decide(snap, history, None, dataclasses.replace(config, preset="default"), T0)
    assert dataclasses.replace(fell_back, forecast_status="", forecast_reason="") == default
    assert decide(snap, history, None, config, T0).forecast_status == "off"


def test_where_the_forecast_falls_new_meetings_go_only_to_the_nodes_it_needs_later() -> None:
    # Six busy nodes carry 3 nodes of demand, and the forecast falls to half a node from
    # 500 s on (an exam's end). New meetings would keep all six busy for their hour: they go
    # to the two fullest (what the forecast needs from steer_from to the hold, 1, and one
    # more); the rest are steered away and empty with the exam.
    cpus = (0.3, 0.4, 0.45, 0.5, 0.65, 0.69)
    nodes = [serving(f"n-{k}", cpu=c, meetings=k + 1) for k, c in enumerate(cpus)]
    falls = ahead(3.0, 3.0, *[0.5] * 8)
    d = decide(snapshot(*nodes), History(), falls, FORECAST, T0)
    assert d.numbers["steer_keep"] == 2
    away = {iid for iid, m in d.steer if m == FORECAST.steer_multiplier}
    assert away | set(d.drain) == {"n-0", "n-1", "n-2", "n-3"}
    assert not {"n-4", "n-5"} & (away | set(d.drain))
    assert "new meetings go to 2, the forecast falling" in forecast_lines(d, FORECAST)[0]
    # Early steering leaves the nodes kept open alone: n-4 and n-5 are warm (past 60 %),
    # but the four being emptied already make a third of the six.
    # Off: new meetings spread over every node the forecast holds for the exam (5); of those
    # early steering takes the warmest (n-5, 69 %), the emptiest one being emptied.
    off = dataclasses.replace(FORECAST, forecast_steer_from=0.0)
    d = decide(snapshot(*nodes), History(), falls, off, T0)
    assert d.numbers["steer_keep"] == d.numbers["keep_busy"] == 5
    assert {iid for iid, m in d.steer if m == FORECAST.steer_multiplier} == {"n-0", "n-5"}
    late = dataclasses.replace(off, steer_warm_share=0.0)
    d = decide(snapshot(*nodes), History(), falls, late, T0)
    assert {iid for iid, m in d.steer if m == FORECAST.steer_multiplier} == {"n-0"}
    # Where the forecast holds or rises, it changes nothing.
    flat = ahead(*[3.0] * 10)
    d = decide(snapshot(*nodes), History(), flat, FORECAST, T0)
    assert d.numbers["steer_keep"] == d.numbers["keep_busy"]
    assert "new meetings" not in forecast_lines(d, FORECAST)[0]


def test_steer_from_beyond_the_hold_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    required_settings(monkeypatch)
    monkeypatch.setenv("BBBSCALER_FORECAST__HOLD", "300")
    with pytest.raises(ConfigError, match=r"forecast.*steer_from must not exceed hold"):
        load_settings(ScalerSettings)
    monkeypatch.setenv("BBBSCALER_FORECAST__STEER_FROM", "0")
    settings = load_settings(ScalerSettings)
    assert PolicyConfig.from_settings(settings).forecast_steer_from == 0.0
