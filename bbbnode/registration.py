"""This host in Scalelite: register and enable, cordon, deregister, read its state.

Every helper looks the server up by its URL first, so each one is idempotent and
safe after a restart. Nothing here ends meetings: Scalelite's ``panicServer`` is
deliberately never used; a host leaves by cordon, wait, then ``deleteServer``.
"""

from __future__ import annotations

from typing import Final, Literal

from bbbcore import logs
from bbbcore.scalelite import ScaleliteClient, ScaleliteServer, normalize_url

log = logs.get(__name__)

Presence = Literal["enabled", "cordoned", "disabled", "absent"]
"""A server's state in Scalelite, or ``absent`` when no server has this URL."""
ABSENT: Final = "absent"


async def register(
    client: ScaleliteClient,
    url: str,
    secret: str,
    load_multiplier: float = 1.0,
    tag: str | None = None,
    *,
    draining: bool,
) -> ScaleliteServer | None:
    """Add the server if missing, fix its secret/multiplier/tag, then enable it.

    With ``draining`` (the host is being drained or is terminating) the state is
    left as it is and a missing server is not added back: re-enabling would send
    new meetings to a host that is leaving, and re-adding would undo a
    deregistration. Returns None in that last case.
    """
    if draining:
        existing = await client.find_by_url(url)
        if existing is None:
            log.info("scalelite_registration_skipped", url=url, reason="draining_and_absent")
            return None
        server = await client.ensure_registered(url, secret, load_multiplier, tag)
        log.info("scalelite_left_as_is", id=server.id, state=server.state, reason="draining")
        return server
    server = await client.ensure_registered(url, secret, load_multiplier, tag)
    if server.state != "enabled":
        server = await client.set_state(server.id, "enabled")
        log.info("scalelite_server_enabled", id=server.id, url=url)
    return server


async def presence(client: ScaleliteClient, url: str) -> Presence:
    """The server's state, or ``absent``; Scalelite errors propagate (unknown is not absent)."""
    server = await client.find_by_url(url)
    return ABSENT if server is None else server.state


async def cordon(client: ScaleliteClient, url: str) -> ScaleliteServer | None:
    """Stop new meetings going to this host; running meetings go on.

    A ``disabled`` server (Scalelite disables a cordoned one once its load is 0)
    is left disabled, which already takes no meetings. None when absent.
    """
    server = await client.find_by_url(url)
    if server is None:
        log.info("scalelite_cordon_absent", url=url)
        return None
    if server.state == "enabled":
        server = await client.set_state(server.id, "cordoned")
        log.info("scalelite_server_cordoned", id=server.id, url=url)
    return server


async def enable(client: ScaleliteClient, url: str) -> ScaleliteServer | None:
    """Let Scalelite send new meetings here again; None when the server is absent."""
    server = await client.find_by_url(url)
    if server is None:
        log.warning("scalelite_enable_absent", url=url)
        return None
    if server.state != "enabled":
        server = await client.set_state(server.id, "enabled")
        log.info("scalelite_server_enabled", id=server.id, url=url)
    return server


async def deregister(client: ScaleliteClient, url: str) -> bool:
    """``deleteServer`` every server registered under ``url``; absent counts as success.

    Returns True if something was deleted now. Only call this once the host has
    no meetings: Scalelite forgets the meetings of a deleted server.
    """
    want = normalize_url(url)
    deleted = False
    for server in await client.get_servers():
        if normalize_url(server.url) == want:
            deleted = await client.delete(server.id) or deleted
    log.info("scalelite_deregistered", url=url, deleted=deleted)
    return deleted
