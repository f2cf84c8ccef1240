"""Scalelite's server tags as settings take them (no network code: bbbnode's exporter-only mode
loads its settings without the fleet side)."""

from __future__ import annotations

from typing import Final

NO_TAG: Final = "none"
"""In a create's tag list, stands for the untagged servers."""


def server_tag(value: str | None) -> str | None:
    """A server tag as settings take it: None for none; ValueError for one no create can ask
    for. Scalelite splits a create's tag list on ";", reads "none" as untagged and a trailing
    "!" as required, and compares names as written (app/models/server.rb:291-308 at
    v1.8.5)."""
    if value is None or value == "":
        return None
    if ";" in value or value.endswith("!") or value == NO_TAG or value != value.strip():
        raise ValueError(
            "a Scalelite server tag has no ';', no trailing '!', no surrounding blanks and "
            "is not 'none'"
        )
    return value
