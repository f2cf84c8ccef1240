"""What bbbnode loads: exporter-only mode never imports the fleet side.

``aws.enabled = false`` is the drop-in for bbb-exporter; its footprint target
(RSS <= 60 MB at 1,000 meetings, benchmarks/footprint.py) holds only while the
boto stack, acme and cryptography stay out of the process. Each check runs in
a fresh interpreter, so what the test process itself imported does not count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Top-level packages of the fleet side (aioboto3 and what it drags in, acme and
# what it drags in) and bbbnode's own fleet modules.
FLEET_ONLY = (
    "aioboto3", "aiobotocore", "boto3", "botocore", "s3transfer", "jmespath",
    "acme", "josepy", "cryptography", "OpenSSL", "requests", "certifi",
    "bbbcore.aws", "bbbcore.imds", "bbbcore.scalelite",
    "bbbnode.fleet", "bbbnode.tls", "bbbnode.dns", "bbbnode.drain", "bbbnode.protector",
    "bbbnode.efs", "bbbnode.hostconfig", "bbbnode.registration",
)  # fmt: skip
TLS_ONLY = ("acme", "josepy", "bbbnode.tls")

# Runs the real daemon in exporter-only mode against a BBB answer served in
# the same process, until /metrics shows the meeting, then SIGTERM; prints
# what was loaded.
EXPORTER_RUN = """
import asyncio, json, os, signal, socket, sys, tempfile
from pathlib import Path

import aiohttp
from aiohttp import web

from bbbnode import daemon
from bbbnode.settings import NodeSettings

MEETINGS = (
    b"<response><returncode>SUCCESS</returncode><meetings><meeting>"
    b"<meetingID>m1</meetingID><internalMeetingID>i1</internalMeetingID>"
    b"<running>true</running><participantCount>2</participantCount>"
    b"<attendees><attendee><userID>u1</userID><role>MODERATOR</role></attendee>"
    b"<attendee><userID>u2</userID><role>VIEWER</role></attendee></attendees>"
    b"</meeting></meetings></response>"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def main(tmp: Path) -> dict:
    async def get_meetings(_: web.Request) -> web.Response:
        return web.Response(body=MEETINGS, content_type="text/xml")

    app = web.Application()
    app.router.add_get("/bigbluebutton/api/getMeetings", get_meetings)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    bbb_port = runner.addresses[0][1]
    (tmp / "proc").mkdir()
    (tmp / "proc" / "stat").write_text("cpu  1 0 1 100 0 0 0 0 0 0\\n")
    listen = f"127.0.0.1:{free_port()}"
    settings = NodeSettings(
        bbb={"url": f"http://127.0.0.1:{bbb_port}/bigbluebutton/", "secret": "s",
             "poll_interval": 0.05, "properties_files": []},
        metrics={"listen": listen},
        host={"procfs": str(tmp / "proc"), "instance_id": "i-boundary"},
        recordings={"root": str(tmp)},
        aws={"enabled": False},
    )
    node = asyncio.create_task(daemon.run(settings, environ={}))
    body = ""
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            try:
                async with http.get(f"http://{listen}/metrics") as resp:
                    body = await resp.text()
            except aiohttp.ClientError:
                pass
            if "bbb_meetings 1.0" in body:
                break
            await asyncio.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)
    code = await node
    await runner.cleanup()
    return {"exit": code, "served": "bbb_meetings 1.0" in body, "modules": sorted(sys.modules)}


with tempfile.TemporaryDirectory() as tmp:
    print(json.dumps(asyncio.run(main(Path(tmp)))))
"""


def _python(code: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BBBNODE_", "AWS_"))}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    doc: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return doc


def _loaded(modules: object, names: tuple[str, ...]) -> list[str]:
    assert isinstance(modules, list)
    return sorted(
        name for name in modules if any(name == n or name.startswith(n + ".") for n in names)
    )


@pytest.mark.integration
def test_exporter_only_daemon_never_loads_the_fleet_side() -> None:
    doc = _python(EXPORTER_RUN)
    assert doc["served"] is True
    assert doc["exit"] == 0
    assert _loaded(doc["modules"], FLEET_ONLY) == []
    # The probe is real: the exporter's own modules were there.
    assert _loaded(doc["modules"], ("bbbnode.collector", "bbbcore.meetings")) == [
        "bbbcore.meetings",
        "bbbnode.collector",
    ]


def test_cli_imports_nothing_of_the_fleet_side() -> None:
    doc = _python(
        "import json, sys\nimport bbbnode.cli, bbbnode.daemon\n"
        "print(json.dumps({'modules': sorted(sys.modules)}))"
    )
    assert _loaded(doc["modules"], FLEET_ONLY) == []


def test_fleet_module_loads_acme_only_for_tls() -> None:
    doc = _python(
        "import json, sys\nimport bbbnode.fleet\n"
        "print(json.dumps({'modules': sorted(sys.modules)}))"
    )
    assert _loaded(doc["modules"], TLS_ONLY) == []
    assert "aioboto3" in _loaded(doc["modules"], ("aioboto3",))


def test_the_fleet_certificate_needs_no_acme() -> None:
    """tls.mode fleet (the default) reads a secret and installs it: no ACME client loaded."""
    doc = _python(
        "import json, sys\nimport bbbnode.fleet, bbbnode.fleet_certificate, "
        "bbbnode.certificate_metrics, bbbcore.fleet_certificate, bbbcore.secret_versions\n"
        "print(json.dumps({'modules': sorted(sys.modules)}))"
    )
    assert _loaded(doc["modules"], (*TLS_ONLY, "bbbcore.acme_dns01", "requests")) == []
