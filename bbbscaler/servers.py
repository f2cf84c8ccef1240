"""Each instance's server in Scalelite, found by the URL bbbnode registers it under.

The URL comes from ``scalelite.server_url_template`` (placeholders instance_id,
domain, private_ip), the same name bbbnode derives from its instance id, and
is compared in bbbcore.scalelite's normal form. One getServers per round.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from bbbcore import scalelite
from bbbcore.scalelite import ScaleliteClient, ScaleliteServer, normalize_url
from bbbscaler.model import Node, ServerView

ABSENT_ID = ""
"""The ServerView id of a node Scalelite does not list."""


def server_url(template: str, node: Node, domain: str) -> str | None:
    """The node's Scalelite server URL; None when the template needs an address it lacks."""
    return scalelite.server_url(template, node.instance_id, domain, node.private_ip)


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
        by_url = scalelite.servers_by_url(servers)
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
