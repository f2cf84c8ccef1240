"""A BBB host that restricts supportedChecksumAlgorithms, as Scalelite v1.8.5 polls it.

bbb-web refuses a checksum whose algorithm the property does not name
(bbb-common-web GetChecksumValidator.java:49-80 at 4b5d4e9). Scalelite signs every
call to BBB, its poll's getMeetings included (lib/tasks/poll.rake:38), with one
algorithm chosen by LOADBALANCER_CHECKSUM_ALGORITHM
(app/controllers/concerns/api_helper.rb:90-104), SHA256 while it is unset.
"""

from __future__ import annotations

import pytest

from bbbcore.bbb_secret import SCALELITE_SETTING, scalelite_signing_algorithm
from bbbsim.bbb_emulator import EmulatedBbb, client_url, serve
from bbbsim.scalelite_emulator import ScaleliteEmulator

SECRET = "restricted-host-secret"


@pytest.mark.parametrize(
    ("loadbalancer_checksum_algorithm", "polled"),
    [
        (None, False),  # Scalelite's default: SHA256, refused by a sha512-only host
        (SCALELITE_SETTING.partition("=")[2], True),  # what bbbnode tells operators to set
    ],
)
async def test_scalelite_polls_a_sha512_only_host_only_when_told(
    loadbalancer_checksum_algorithm: str | None, polled: bool
) -> None:
    bbb = EmulatedBbb(SECRET, supported_checksum_algorithms="sha512")
    bbb.add_meeting("lecture", 12)
    runner, port = await serve(bbb)
    emulator = ScaleliteEmulator(
        "lb-secret",
        backend_algorithm=scalelite_signing_algorithm(loadbalancer_checksum_algorithm),
    )
    try:
        sid = emulator.add_server(client_url(port) + "api/", SECRET, state="enabled")
        for _ in range(3):
            await emulator.poll()
        server = emulator.server(sid)
        # A refused poll is a failed poll: the server never comes online, gets no load
        # and so never a meeting (poll.rake:74 needs successful polls to bring it online).
        assert server.online is polled
        assert (server.load is not None) is polled
        assert bbb.request_count("getMeetings") == 3
    finally:
        await emulator.close()
        await runner.cleanup()
