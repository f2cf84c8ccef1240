"""PolicyConfig: the policy's knobs as plain values, and the presets' own timings."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from bbbscaler.schedule import Window
from bbbscaler.settings import ScalerSettings

Preset = Literal["seed", "default", "forecast"]


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """The policy's knobs as plain values (see PolicySettings for their meaning)."""

    preset: Preset = "default"
    scale_out_after: float = 0.0
    scale_in_after: float = 600.0
    cooldown_out: float = 0.0
    """Seconds after a capacity change before a scale-out may follow."""
    cooldown_in: float = 300.0
    """Seconds after a capacity change before a scale-in may follow."""
    min_nodes: int = 0
    max_nodes: int = 0
    high_cpu: float = 0.80
    low_cpu: float = 0.06
    target_cpu: float = 0.72
    headroom: float = 0.15
    trend_window: float = 300.0
    lookahead: float = 300.0
    """Seconds ahead the demand trend is projected."""
    boot_time: float = 180.0
    """Seconds from a cold launch to serving."""
    registration: float = 60.0
    """Seconds after a node serves before Scalelite places meetings on it (scalelite.
    poll_interval): Scalelite brings a server online only at a successful poll
    (lib/tasks/poll.rake, poll:servers: "Only bring the server online if the number of
    successful requests is >= the acceptable threshold"), one every POLL_INTERVAL, 60 s
    unless set (task :poll, ``interval: 60.seconds``)."""
    warm_start_time: float = 45.0
    """Seconds from the start of a warm pool host to serving (while ready ones are left)."""
    boot_grace: float = 900.0
    stale_after: float = 60.0
    max_draining: int = 2
    windows: tuple[Window, ...] = ()
    steer_cpu: float = 0.70
    """Node CPU from which new meetings are steered away from the node."""
    steer_warm_cpu: float = 0.60
    """Node CPU from which the warmest nodes are steered too, up to ``steer_warm_share``."""
    steer_warm_share: float = 0.34
    """Share of the steerable nodes (at least one) ``steer_warm_cpu`` may bring the steered
    ones to, hot ones and those being emptied counted first; 0: only ``steer_cpu`` steers."""
    steer_multiplier: float = 100.0
    """The load_multiplier of a steered node; 1 turns steering off."""
    gap_limit: float = 30.0
    """Samples further apart than this (missed rounds) break a "held for" run."""
    drift_budget: float = 0.10
    """Share of the members that may drain at once to replace drifted nodes (at least one);
    0 turns rollouts off."""
    interval: float = 10.0
    """Seconds between rounds (loop.interval): how late a round may see anything."""
    tag: str | None = None
    """The Scalelite server tag of this fleet (scalelite.tag): only servers with it count."""
    forecast_weeks: int = 4
    """Earlier weeks the forecast's seasonal values come from."""
    forecast_min_weeks: int = 2
    """Fewer earlier weeks than this covering the next hour: no forecast (reactive)."""
    forecast_quantile: float = 0.75
    """The quantile of the earlier weeks' values at the same week-time."""
    forecast_margin: float = 300.0
    """Seconds beyond boot_time the forecast need is met before it arrives."""
    forecast_hold: float = 1800.0
    """Seconds ahead within which a node the forecast needs is never drained."""
    forecast_steer_from: float = 600.0
    """New meetings go to what the forecast needs from this far ahead to the hold, plus
    one node; 0: off."""
    forecast_window: float = 3600.0
    """Seconds of today the correction compares with their seasonal forecast."""
    forecast_stale_after: float = 900.0
    """Seconds after which the newest history value is too old to forecast on."""
    forecast_min_correction: float = 0.1
    forecast_max_correction: float = 2.0
    forecast_min_evidence: float = 0.5
    """Mean seasonal demand (nodes) over the window below which today is not judged."""
    forecast_headroom: float = 0.05
    """headroom while the forecast is in use (the trend is not extrapolated then)."""

    @classmethod
    def preset_values(cls, preset: Preset) -> PolicyConfig:
        """The preset's own timings (seed: the write-up's alarms and cooldown)."""
        if preset == "seed":
            return cls(
                preset="seed",
                scale_out_after=180.0,
                scale_in_after=900.0,
                cooldown_out=300.0,
                cooldown_in=300.0,
                max_draining=1,
            )
        return cls(preset=preset)

    @classmethod
    def from_settings(cls, s: ScalerSettings) -> PolicyConfig:
        p = s.policy
        base = cls.preset_values(p.preset)
        cooldown_out, cooldown_in = base.cooldown_out, base.cooldown_in
        if p.cooldown is not None:
            cooldown_in = p.cooldown
            # The default preset never waits to add capacity: it counts booting nodes instead.
            cooldown_out = p.cooldown if p.preset == "seed" else 0.0
        return replace(
            base,
            scale_out_after=(
                p.scale_out_after if p.scale_out_after is not None else base.scale_out_after
            ),
            scale_in_after=p.scale_in_after
            if p.scale_in_after is not None
            else base.scale_in_after,
            cooldown_out=cooldown_out,
            cooldown_in=cooldown_in,
            min_nodes=p.min_nodes,
            max_nodes=p.max_nodes,
            high_cpu=p.high_cpu,
            low_cpu=p.low_cpu,
            target_cpu=p.target_cpu,
            headroom=p.headroom,
            trend_window=p.trend_window,
            lookahead=p.lookahead,
            boot_time=p.boot_time,
            registration=s.scalelite.poll_interval,
            warm_start_time=p.warm_start_time,
            boot_grace=p.boot_grace,
            stale_after=s.metrics.stale_after,
            max_draining=p.max_draining if p.preset != "seed" else 1,
            windows=tuple(Window.from_settings(w) for w in p.schedules),
            steer_cpu=p.steer_cpu,
            steer_warm_cpu=p.steer_warm_cpu,
            steer_warm_share=p.steer_warm_share,
            steer_multiplier=p.steer_multiplier,
            gap_limit=3 * s.loop.interval,
            drift_budget=p.drift_budget,
            interval=s.loop.interval,
            tag=s.scalelite.tag,
            forecast_weeks=s.forecast.weeks,
            forecast_min_weeks=s.forecast.min_weeks,
            forecast_quantile=s.forecast.quantile,
            forecast_margin=s.forecast.margin,
            forecast_hold=s.forecast.hold,
            forecast_steer_from=s.forecast.steer_from,
            forecast_window=s.forecast.window,
            forecast_stale_after=s.forecast.stale_after,
            forecast_headroom=s.forecast.headroom,
        )

    @property
    def schedule_lead(self) -> float:
        """Seconds before a window opens that its nodes are launched: they boot, then wait
        for Scalelite's poll to bring them online, before the first rooms arrive."""
        return self.boot_time + self.registration

    @property
    def horizon(self) -> float:
        """Seconds of history any rule looks back over."""
        return (
            max(self.scale_out_after, self.scale_in_after, self.trend_window, self.cooldown_in)
            + self.gap_limit
        )
