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
    streaks: tuple[tuple[str, float], ...] = field(default=(), compare=False)
    """For each signal of the newest sample, when its streak began: the oldest sample of the
    run that holds it with no gap over ``streak_gap``, cut or not. ``record`` keeps it, so
    ``held_for`` need not walk the run back every round (at night a scale-in condition holds
    for the whole history). Only in an ``ordered`` history."""
    streak_gap: float | None = field(default=None, compare=False)
    """The gap limit ``streaks`` were kept with (None: none kept)."""

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
        gap = config.gap_limit
        streaks: list[tuple[str, float]] = []
        if ordered:
            last = kept[-1] if kept else None
            for signal in decision.signals:
                began = now
                if last is not None and signal in last.signals and now - last.at <= gap:
                    began = self._began(signal, gap, kept)
                streaks.append((signal, began))
        return History(
            (*kept, Sample(now, decision.signals, decision.demand)),
            now if grew or decision.drain else self.last_change_at,
            now if grew else self.last_growth_at,
            ordered,
            tuple(streaks),
            gap if ordered else None,
        )

    def _began(self, signal: str, gap: float, kept: tuple[Sample, ...]) -> float:
        """When the streak of ``signal`` that the last of ``kept`` (the samples ``record``
        keeps, in order) ends began."""
        last = kept[-1]
        if self.ordered and self.streak_gap == gap and self.samples[-1] is last:
            for held, began in self.streaks:
                if held == signal:
                    return began
        return _since(kept, signal, last.at, gap)

    def held_for(self, signal: str, now: float, gap_limit: float) -> float:
        """Seconds ``signal`` has held up to ``now`` (which counts as holding)."""
        samples = self.samples
        if self.ordered and self.streak_gap == gap_limit and samples:
            newest = samples[-1]
            if signal not in newest.signals or now - newest.at > gap_limit:
                return now - now
            for held, began in self.streaks:
                if held == signal:
                    # The run's oldest sample still kept: the walk below would stop there.
                    return now - max(began, samples[0].at)
        return now - _since(samples, signal, now, gap_limit)

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


def _since(samples: tuple[Sample, ...], signal: str, now: float, gap_limit: float) -> float:
    """Since when ``signal`` has held up to ``now``, walking ``samples`` back from the newest."""
    since = prev = now
    for s in reversed(samples):
        if signal not in s.signals or prev - s.at > gap_limit:
            break
        since = prev = s.at
    return since
