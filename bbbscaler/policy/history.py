"""History: what earlier rounds leave behind for decide()."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from itertools import pairwise
from operator import attrgetter

from bbbscaler.model import Decision
from bbbscaler.policy.config import PolicyConfig

# Signal names kept in History.
OUT = "out"
IN = "in"

_at = attrgetter("at")


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
    ordered: bool = field(default=False, compare=False)
    """The samples are known to be in time order (and no time is NaN): the old ones are
    then a prefix, found by bisection. ``record`` keeps track of it; a History made
    otherwise is checked at its first ``record``. A clock that goes back makes a round's
    sample older than the one before: until that one is cut, every ``record`` filters
    the whole history instead."""

    def record(self, decision: Decision, now: float, config: PolicyConfig) -> History:
        """This history, with ``decision`` (made at ``now``) appended and old samples cut."""
        keep_from = now - config.horizon
        # A NaN clock fails every comparison: bisection would keep all, the filter none.
        sane = keep_from <= now
        if self.ordered and sane:
            kept = self.samples[bisect_left(self.samples, keep_from, key=_at) :]
        else:
            kept = tuple(s for s in self.samples if s.at >= keep_from)
        # The new sample keeps the order if it is not older than the last.
        ordered = (
            sane
            and (self.ordered or all(a.at <= b.at for a, b in pairwise(kept)))
            and (not kept or kept[-1].at <= now)
        )
        grew = decision.desired is not None or bool(decision.undrain)
        return History(
            (*kept, Sample(now, decision.signals, decision.demand)),
            now if grew or decision.drain else self.last_change_at,
            now if grew else self.last_growth_at,
            ordered,
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
        samples = self.samples
        first = bisect_left(samples, start, key=_at) if self.ordered else 0
        for s in samples[first:] if first else samples:
            if s.at >= start and s.demand is not None:
                return s.at, s.demand
        return None

    def cooling(self, now: float, cooldown: float, since_growth: bool = False) -> bool:
        """Within ``cooldown`` of the last capacity change (or only of the last growth)."""
        last = self.last_growth_at if since_growth else self.last_change_at
        return last is not None and now - last < cooldown
