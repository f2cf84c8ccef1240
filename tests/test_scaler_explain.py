"""``bbbscaler explain``'s text: the node table and the decision, as operators read them."""

from __future__ import annotations

import dataclasses

from bbbscaler.explain import render
from bbbscaler.model import Action, Decision, ServerView
from bbbscaler.policy import PolicyConfig
from tests.scaler_fleets import booting, serving, snapshot

CONFIG = PolicyConfig()


def test_the_table_shows_each_servers_load_multiplier_and_the_steer() -> None:
    snap = snapshot(
        serving("i-a", cpu=0.5, meetings=2),
        dataclasses.replace(
            serving("i-b", cpu=0.8, meetings=3),
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
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.startswith("i-")}
    assert rows["i-o"][2] == "offline"
    assert rows["i-o"][7:9] == ["enabled", "offline"]
    assert rows["i-x"][2:4] == ["other", "tag"]
    assert rows["i-a"][2] == "serving"
    assert (
        "scalelite tag: counting and steering only servers tagged 'exam' (scalelite.tag); "
        "1 node(s) with another tag not counted"
    ) in text
    # Untagged scaler, untagged fleet: nothing to say.
    assert "scalelite tag" not in render(snapshot(other), Decision(Action.NONE, "s"), CONFIG)
