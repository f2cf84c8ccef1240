"""decide(): the pure heart of bbbscaler, and the presets it offers.

``decide(snapshot, history, forecast, config, now) -> Decision`` does no I/O and
keeps no state: what it needs from earlier rounds is in History, which the caller
extends with ``history.record(decision, now, config)``, and what it knows of the
coming hour is the Forecast, made by the caller from the fleet's earlier weeks
(``forecast_from``; None: none). The backtest calls the same functions on
simulated snapshots, and passes a FleetMemo (``sort_fleet``'s facts of the nodes it
saw the round before: the simulator repeats unchanged node objects; the result is
the same without it).

The package is cut the way the Kubernetes cluster-autoscaler cuts scale-down:

- ``config``: PolicyConfig and the presets' values;
- ``history``: History and Sample, what earlier rounds leave behind;
- ``fleet``: sort_fleet, the snapshot sorted into serving, booting, draining,
  operator-drained, blind, drifted;
- ``eligibility``: which nodes may drain or be terminated, what holds every scale-in;
- ``need``, ``seed``, ``default``, ``forecast``: how many nodes the load needs, per
  preset; ``forecast`` also holds the forecast itself (DemandHistory, Forecast,
  forecast_from);
- ``budgets``: bounds, and how many drains may start;
- ``capacity``: grow, shrink or reconcile, the steps every preset shares;
- ``drift``: rollouts, drifted nodes replaced through the drain;
- ``steering``: load_multipliers for Scalelite;
- ``warm``: the warm pool, neither serving nor booting capacity, and the launch lag it buys;
- ``windows``: the schedule windows in effect the fleet will be late for or short of.

The safety rules every preset obeys (property-tested in tests/test_policy_properties.py):

- It never lowers desired capacity with SetDesiredCapacity (that lets the ASG
  pick a victim); capacity only shrinks by terminating a node it drained.
- It terminates only a node it is draining whose fresh data says no meeting and
  no participant, and which Scalelite shows with no load (or disabled, or gone).
- A node someone else cordoned (no drain tag) is no capacity, and the scaler
  never re-enables, drains, steers or terminates it.
- Missing or stale data from any node, or an unreadable Scalelite, blocks every
  scale-in step of the round (new drains and terminations); scale-out still runs.
- Desired never exceeds the upper bound (policy max_nodes, the ASG's MaxSize);
  a drain never takes serving capacity below the lower bound (policy
  min_nodes, the ASG's MinSize, the open schedule windows).
- A rollout drains at most its budget of drifted nodes at once, and only once the
  nodes that serve without them meet the preset's need and the lower bound.
- The forecast only adds capacity or holds it: the forecast preset wants at least what
  the default rule wants, keeps at least what it keeps, and is the default rule exactly
  when its forecast is unusable (short, stale or unreadable history).
"""

from __future__ import annotations

from bbbscaler.model import Decision, FleetSnapshot
from bbbscaler.policy import default, forecast, seed, warm, windows
from bbbscaler.policy.budgets import bounds
from bbbscaler.policy.capacity import plan_capacity
from bbbscaler.policy.config import PolicyConfig, Preset
from bbbscaler.policy.drift import replace_drifted
from bbbscaler.policy.eligibility import drained
from bbbscaler.policy.fleet import Fleet, FleetMemo, sort_fleet
from bbbscaler.policy.forecast import DemandHistory, Forecast, forecast_from
from bbbscaler.policy.history import IN, OUT, History, Sample
from bbbscaler.policy.need import Need
from bbbscaler.policy.steering import steering

__all__ = [
    "IN",
    "OUT",
    "DemandHistory",
    "Fleet",
    "FleetMemo",
    "Forecast",
    "History",
    "PolicyConfig",
    "Preset",
    "Sample",
    "bounds",
    "decide",
    "drained",
    "forecast_from",
    "sort_fleet",
]


def decide(
    snapshot: FleetSnapshot,
    history: History,
    forecast_: Forecast | None,
    config: PolicyConfig,
    now: float,
    memo: FleetMemo | None = None,
) -> Decision:
    """One round's decision over ``snapshot``; pure. ``forecast_`` is used by the forecast
    preset only (None: no forecast, the reactive rules alone). ``memo``: for a caller whose
    snapshots repeat unchanged node objects (the backtest); the result is the same."""
    config = warm.lagged(snapshot, config)
    fleet = sort_fleet(snapshot, config, memo)
    lower, upper, window = bounds(snapshot, config, now)
    planned = window is not None

    def need_of(f: Fleet) -> Need:
        if config.preset == "seed":
            return seed.need(f, config)
        if config.preset == "forecast":
            return forecast.need(f, history, forecast_, config, now, planned)
        return default.need(f, history, config, now, planned)

    need = need_of(fleet)
    decision = plan_capacity(snapshot, history, config, now, fleet, need, lower, upper, window)
    decision = replace_drifted(
        snapshot, history, config, now, fleet, need_of, lower, upper, decision
    )
    steer = decision.steer
    if config.preset != "seed":
        steer = steering(fleet, need.keep_for_steering, lower, config, decision) or steer
    status, why = decision.forecast_status, decision.forecast_reason
    if config.preset == "forecast":
        status, why = forecast.noted(forecast_)
    # What follows only adds to the decision: one copy for all of it.
    return decision.completed(
        steer,
        warm.account(snapshot, fleet, config, decision),
        windows.misses(snapshot, fleet, decision, config, now) or decision.schedule_misses,
        status,
        why,
    )
