"""History: what earlier rounds leave behind for decide()."""

from __future__ import annotations

from dataclasses import dataclass

from bbbscaler.model import Decision
from bbbscaler.policy.config import PolicyConfig

# Signal names kept in History.
OUT = "out"
IN = "in"


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    signals: frozenset[str]
    demand: float | None


@dataclass(frozen=True, slots=True)
class History:
    """What decide() needs from earlier rounds."""

    samples: tuple[Sample, ...] = ()
    last_change_at: float | None = None
    """When a round last changed capacity (scale-out, undrain, or a new drain)."""
    last_growth_at: float | None = None
    """When a round last added capacity (scale-out, reconcile or undrain)."""

    def record(self, decision: Decision, now: float, config: PolicyConfig) -> History:
        """This history, with ``decision`` (made at ``now``) appended and old samples cut."""
        keep_from = now - config.horizon
        samples = tuple(s for s in self.samples if s.at >= keep_from)
        samples += (Sample(now, decision.signals, decision.demand),)
        grew = decision.desired is not None or bool(decision.undrain)
        return History(
            samples,
            now if grew or decision.drain else self.last_change_at,
            now if grew else self.last_growth_at,
        )

    def held_for(self, signal: str, now: float, gap_limit: float) -> float:
        """Seconds ``signal`` has held up to ``now`` (which counts as holding)."""
        since = prev = now
        for s in reversed(self.samples):
            if signal not in s.signals or prev - s.at > gap_limit:
                break
            since = prev = s.at
        return now - since

    def demand_since(self, start: float) -> tuple[float, float] | None:
        """(time, demand) of the oldest sample at or after ``start`` with a known demand."""
        for s in self.samples:
            if s.at >= start and s.demand is not None:
                return s.at, s.demand
        return None

    def cooling(self, now: float, cooldown: float, since_growth: bool = False) -> bool:
        """Within ``cooldown`` of the last capacity change (or only of the last growth)."""
        last = self.last_growth_at if since_growth else self.last_change_at
        return last is not None and now - last < cooldown
