"""POST operations on bbbnode's HTTP port answer loopback clients only."""

from typing import Any

from aiohttp.test_utils import make_mocked_request

from bbbcore.httpd import is_loopback
from bbbnode.exposition import NodeMetrics
from bbbnode.server import build_app


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert not is_loopback("10.0.0.5")
    assert not is_loopback("203.0.113.4")
    assert not is_loopback(None)
    assert not is_loopback("not-an-ip")


async def test_drain_operation_from_loopback_and_refused_from_the_vpc() -> None:
    calls: list[str] = []

    async def drain() -> dict[str, Any]:
        calls.append("drain")
        return {"accepted": True}

    app = build_app(NodeMetrics(lambda: None, lambda: 0.0), lambda: None, lambda: 0.0,
                    lambda: True, 30.0, operations={"drain": drain})  # fmt: skip
    route = next(r for r in app.router.routes() if r.method == "POST")
    local = make_mocked_request("POST", "/drain", app=app,
                                transport=_Transport("127.0.0.1"))  # fmt: skip
    answer = await route.handler(local)
    assert answer.status == 200
    assert calls == ["drain"]
    remote = make_mocked_request("POST", "/drain", app=app, transport=_Transport("10.1.2.3"))
    refused = await route.handler(remote)
    assert refused.status == 403
    assert calls == ["drain"]


class _Transport:
    def __init__(self, peer: str) -> None:
        self._peer = peer

    def get_extra_info(self, name: str, default: object = None) -> object:
        return (self._peer, 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False
