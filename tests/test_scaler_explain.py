"""``bbbscaler explain``'s text: the node table and the decision, as operators read them."""

from __future__ import annotations

import dataclasses
import re

from bbbscaler.explain import render
from bbbscaler.model import Action, Decision, Launch, ServerView
from bbbscaler.policy import History, PolicyConfig, decide
from bbbscaler.schedule import Window
from tests.scaler_fleets import T0, booting, serving, snapshot

CONFIG = PolicyConfig()


def test_the_table_shows_each_servers_load_multiplier_and_the_steer() -> None:
    snap = snapshot(
        dataclasses.replace(serving("i-a", cpu=0.5, meetings=2), protected=False),
        dataclasses.replace(
            serving("i-b", cpu=0.8, meetings=3),
            protected=False,
            server=ServerView("i-b", "enabled", 3.0, True, 100.0),
        ),
        booting("i-c"),
    )
    decision = Decision(
        Action.NONE, "steady", steer=(("i-a", 2.5), ("i-b", 1.0)), numbers={"capacity": 3}
    )
    assert render(snap, decision, CONFIG) == (
        "instance  lifecycle  role     cpu  meetings  users  age  scalelite  load  mult\n"
        "i-a       InService  serving  50%  2         8      5s   enabled    2     1\n"
        "i-b       InService  serving  80%  3         12     5s   enabled    3     100\n"
        "i-c       InService  booting  -    -         -      -    absent     -     -\n"
        "\n"
        "group bbb: desired 3, min 0, max 20\n"
        "decision: none: steady\n"
        "  steer (load_multiplier): i-a=2.5, i-b=1\n"
        "numbers: capacity=3\n"
    )


def test_no_steer_line_without_steering_and_no_multiplier_for_an_unknown_server() -> None:
    unknown = dataclasses.replace(serving("i-u"), server=None)
    text = render(snapshot(serving("i-a"), unknown), Decision(Action.NONE, "steady"), CONFIG)
    assert "steer" not in text
    row = next(line for line in text.splitlines() if line.startswith("i-u"))
    # Scalelite state "?" (unknown), load "-", mult "-".
    assert row.split()[-3:] == ["?", "-", "-"]


def test_offline_servers_and_the_fleets_tag_are_shown() -> None:
    # Issue 13: an offline server is its own role; a tagged scaler says what it counts.
    offline = dataclasses.replace(
        serving("i-o", meetings=0), server=ServerView("i-o", "enabled", None, False, tag="exam")
    )
    other = dataclasses.replace(serving("i-x"), server=ServerView("i-x", "enabled", 2.0, True))
    ours = dataclasses.replace(
        serving("i-a"), server=ServerView("i-a", "enabled", 2.0, True, tag="exam")
    )
    config = dataclasses.replace(CONFIG, tag="exam")
    text = render(snapshot(ours, offline, other), Decision(Action.HOLD, "held"), config)
    rows = {line.split()[0]: line for line in text.splitlines() if line.startswith("i-")}
    assert " offline " in rows["i-o"]
    assert "enabled offline" in rows["i-o"]
    assert " other tag " in rows["i-x"]
    assert " serving " in rows["i-a"]
    assert (
        "scalelite tag: counting and steering only servers tagged 'exam' (scalelite.tag); "
        "1 node(s) with another tag not counted"
    ) in text
    # Untagged scaler, untagged fleet: nothing to say.
    assert "scalelite tag" not in render(snapshot(other), Decision(Action.NONE, "s"), CONFIG)


def test_a_rollout_shows_the_groups_launch_and_the_drifted_nodes() -> None:
    old, new = Launch("lt-0a", "3"), Launch("lt-0a", "4")
    snap = snapshot(
        dataclasses.replace(serving("i-a"), launch=old),
        dataclasses.replace(serving("i-b"), launch=new),
    )
    snap = dataclasses.replace(snap, group=dataclasses.replace(snap.group, launch=new))
    d = decide(snap, History(), None, CONFIG, snap.at)
    text = render(snap, d, CONFIG)
    rows = {line.split()[0]: line for line in text.splitlines() if line.startswith("i-")}
    assert "serving (drifted)" in rows["i-a"]
    assert "drifted" not in rows["i-b"]
    assert "group bbb: desired 2, min 0, max 20, launches lt-0a:4" in text
    assert "rollout: 1 node(s) drifted from lt-0a:4, at most 1 draining at once" in text
    # Two nodes at 0.3 leave 0.4 of room each: the other takes the next meetings alone, so
    # the drifted one drains now, no replacement needed first.
    assert "decision: drain: drift: 1 node(s) launched from lt-0a:3, not lt-0a:4" in text
    assert "  replacing (drift): i-a" in text


def test_an_operators_cordon_shows_as_operator_drained() -> None:
    cordoned = serving("i-o", cpu=0.4, meetings=2, state="cordoned")
    emptied = serving("i-e", cpu=0.1, meetings=0, state="disabled")
    text = render(snapshot(serving("i-a"), cordoned, emptied), Decision(Action.NONE, "x"), CONFIG)
    # The lifecycle column may say "InService (protected)": the role is the next cell.
    roles = {line.split()[0]: re.split(r" {2,}", line)[2] for line in text.splitlines()[1:4]}
    assert roles == {"i-a": "serving", "i-o": "operator-drained", "i-e": "operator-drained"}


def test_a_missed_window_and_a_window_too_big_are_named() -> None:
    exam = Window("exam", frozenset({3}), 2, 120, "UTC", 5)
    huge = Window("huge", frozenset({0}), 600, 660, "UTC", 30)
    config = dataclasses.replace(CONFIG, windows=(exam, huge))
    snap = snapshot(*(serving(f"i-{k}", cpu=0.4) for k in range(2)), max_size=4)
    text = render(snap, decide(snap, History(), None, config, T0), config)
    assert (
        "WARNING: schedule 'exam' (opens 2026-01-01 00:02:00 UTC, 5 nodes) will be missed: "
        "1 node(s) short: the upper bound holds fewer, 4 node(s) serve 60 s late\n"
    ) in text
    assert "WARNING: schedule 'huge' asks for 30 nodes, the upper bound is 4: 26 short" in text
