"""Each instance's server in Scalelite, found by the URL bbbnode registers it under.

The URL comes from ``scalelite.server_url_template`` (placeholders instance_id,
domain, private_ip), the same name bbbnode derives from its instance id, and
is compared in bbbcore.scalelite's normal form. One getServers per round.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from bbbcore import logs
from bbbcore.scalelite import ScaleliteClient, ScaleliteServer, normalize_url
from bbbscaler.model import Node, ServerView

log = logs.get(__name__)

ABSENT_ID = ""
"""The ServerView id of a node Scalelite does not list."""


def server_url(template: str, node: Node, domain: str) -> str | None:
    """The node's Scalelite server URL; None when the template needs an address it lacks."""
    if node.private_ip is None and "{private_ip" in template:
        return None
    return template.format(
        instance_id=node.instance_id, domain=domain, private_ip=node.private_ip or ""
    )


def view_of(server: ScaleliteServer | None) -> ServerView:
    """A server as the snapshot carries it; ``None`` (not listed) is state ``absent``."""
    if server is None:
        return ServerView(id=ABSENT_ID, state="absent", load=None, online=False)
    return ServerView(
        id=server.id,
        state=server.state,
        load=server.load,
        online=server.online,
        load_multiplier=server.load_multiplier,
        tag=server.tag,
    )


def index(servers: Iterable[ScaleliteServer]) -> dict[str, ScaleliteServer]:
    """Servers by normalised URL; of several with one URL the smallest id, as bbbnode picks."""
    by_url: dict[str, ScaleliteServer] = {}
    for server in sorted(servers, key=lambda s: s.id):
        key = normalize_url(server.url)
        if key in by_url:
            log.warning("scalelite_duplicate_url", url=server.url, ids=[by_url[key].id, server.id])
            continue
        by_url[key] = server
    return by_url


class ScaleliteServers:
    """Maps instances to their Scalelite servers through ``client``."""

    def __init__(self, client: ScaleliteClient, url_template: str, domain: str = "") -> None:
        self._client = client
        self._template = url_template
        self._domain = domain

    def url_of(self, node: Node) -> str | None:
        return server_url(self._template, node, self._domain)

    def match(
        self, nodes: Sequence[Node], servers: Iterable[ScaleliteServer]
    ) -> dict[str, ServerView | None]:
        """Each node's ServerView; None for a node whose URL cannot be formed."""
        by_url = index(servers)
        views: dict[str, ServerView | None] = {}
        for node in nodes:
            url = self.url_of(node)
            # No URL means we cannot tell which server is its: unknown, not absent.
            views[node.instance_id] = (
                None if url is None else view_of(by_url.get(normalize_url(url)))
            )
        return views

    async def read(self, nodes: Sequence[Node]) -> Mapping[str, ServerView | None]:
        """One getServers, mapped onto ``nodes``; raises bbbcore.scalelite errors."""
        return self.match(nodes, await self._client.get_servers())

    async def read_one(self, node: Node) -> ServerView | None:
        """The node's server as Scalelite lists it now."""
        return (await self.read([node]))[node.instance_id]
