"""The database-users chart's bootstrap against a real PostgreSQL on loopback.

What survives the RDS-managed master password's rotation: the applications never use
it. Each logs in as its own user, which the bootstrap makes (and re-runs harmlessly)
with whatever master password Secrets Manager holds at that moment. Debian's
PostgreSQL stands in for Aurora PostgreSQL: the SQL is plain PostgreSQL; RDS's
rds_superuser differs from a superuser only in rights this SQL does not need beyond
CREATEROLE/CREATEDB and membership (see README "Deploying to AWS").
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bbbdeploy.paths import HELM_DIR

pytestmark = pytest.mark.integration

FILES = HELM_DIR / "database-users" / "files"
MASTER = "scalelite"  # cfn/data.yaml MasterUsername


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Server:
    port: int
    socket_dir: Path

    def env(self, user: str, password: str, db: str = "postgres") -> dict[str, str]:
        return {
            **os.environ,
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.port),
            "PGUSER": user,
            "PGPASSWORD": password,
            "PGDATABASE": db,
            "PGSSLMODE": "disable",
        }

    def sql(self, user: str, password: str, query: str, db: str = "postgres") -> str:
        done = subprocess.run(
            ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", query],
            env=self.env(user, password, db), capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip())
        return done.stdout.strip()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None or shutil.which("psql") is None:
        pytest.fail("PostgreSQL server binaries missing: scripts/run-tests installs postgresql")
    # Not pytest's tmp_path: its parents are root's alone, and the server runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="bbbfleet-pg-"))
    data, sockets, pwfile = base / "data", base / "run", base / "pw"
    sockets.mkdir()
    pwfile.write_text("master-1\n")
    # initdb and postgres refuse to run as root: run them as the package's user.
    prefix: list[str] = []
    if os.geteuid() == 0:
        prefix = ["runuser", "-u", "postgres", "--"]
        shutil.chown(base, "postgres")
        shutil.chown(sockets, "postgres")
        shutil.chown(pwfile, "postgres")
    port = _free_port()
    subprocess.run(
        [*prefix, initdb, "-D", str(data), "-U", MASTER, "--pwfile", str(pwfile),
         "--auth=scram-sha-256", "-E", "UTF8"],
        check=True, capture_output=True,
    )  # fmt: skip
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets}"
    subprocess.run(
        [*prefix, pg_ctl, "-D", str(data), "-o", options, "-l", str(base / "log"), "-w", "start"],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        yield Server(port, sockets)
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "fast", "stop"], check=False)
        shutil.rmtree(base, ignore_errors=True)


def _secrets(root: Path, server: Server, passwords: dict[str, str]) -> Path:
    for app, password in passwords.items():
        d = root / app
        d.mkdir(parents=True, exist_ok=True)
        for key, value in {
            "username": f"{app}_app",
            "password": password,
            "dbname": app,
            "host": "127.0.0.1",
            "port": str(server.port),
        }.items():
            (d / key).write_text(value)
    return root


def _bootstrap(
    server: Server, secrets: Path, master_password: str
) -> subprocess.CompletedProcess[str]:
    # The master's secret as the Job mounts it (External Secrets' copy of RDS's secret).
    master = secrets / "master"
    master.mkdir(exist_ok=True)
    (master / "username").write_text(MASTER)
    (master / "password").write_text(master_password)
    env = {**os.environ, "SECRETS_DIR": str(secrets), "PGSSLMODE": "disable"}
    return subprocess.run(
        ["sh", str(FILES / "bootstrap.sh"), "scalelite", "greenlight"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_users_survive_master_rotation_and_take_over_old_tables(
    server: Server, tmp_path: Path
) -> None:
    # A deployment from before this chart: Scalelite's tables belong to the master.
    server.sql(MASTER, "master-1", "CREATE DATABASE scalelite")
    server.sql(
        MASTER, "master-1",
        "CREATE TABLE servers (id serial PRIMARY KEY, url text);"
        " INSERT INTO servers (url) VALUES ('x')",
        db="scalelite",
    )  # fmt: skip
    secrets = _secrets(tmp_path, server, {"scalelite": "sl-pass-1", "greenlight": "gl-pass-1"})

    done = _bootstrap(server, secrets, "master-1")
    assert done.returncode == 0, done.stderr
    assert "scalelite_app owns database scalelite" in done.stdout

    # Each application logs in as itself and owns what its migrations must alter.
    server.sql("scalelite_app", "sl-pass-1", "ALTER TABLE servers ADD COLUMN tag text", "scalelite")
    assert (
        server.sql("scalelite_app", "sl-pass-1", "SELECT count(*) FROM servers", "scalelite") == "1"
    )
    server.sql("greenlight_app", "gl-pass-1", "CREATE TABLE users (id bigint)", "greenlight")
    # ... and reaches no other application's database.
    with pytest.raises(RuntimeError, match="permission denied"):
        server.sql("greenlight_app", "gl-pass-1", "SELECT 1", "scalelite")
    # No master rights for the applications.
    rights = "SELECT rolsuper OR rolcreaterole OR rolcreatedb FROM pg_roles"
    assert server.sql("scalelite_app", "sl-pass-1", f"{rights} WHERE rolname = current_user") == "f"

    # RDS rotates the master password: the applications do not notice.
    server.sql(MASTER, "master-1", f"ALTER ROLE {MASTER} PASSWORD 'master-2'")
    assert server.sql("scalelite_app", "sl-pass-1", "SELECT 1", "scalelite") == "1"
    assert server.sql("greenlight_app", "gl-pass-1", "SELECT 1", "greenlight") == "1"

    # The next run reads the new master password and changes nothing else.
    done = _bootstrap(server, secrets, "master-2")
    assert done.returncode == 0, done.stderr
    assert (
        server.sql("scalelite_app", "sl-pass-1", "SELECT count(*) FROM servers", "scalelite") == "1"
    )

    # A stale master password fails loudly (the Job retries once External Secrets refreshed).
    assert _bootstrap(server, secrets, "master-1").returncode != 0


def test_a_changed_application_password_takes_effect(server: Server, tmp_path: Path) -> None:
    master = "master-2" if _can_login(server, "master-2") else "master-1"
    secrets = _secrets(tmp_path, server, {"scalelite": "sl-pass-1", "greenlight": "gl-pass-1"})
    assert _bootstrap(server, secrets, master).returncode == 0
    _secrets(tmp_path, server, {"scalelite": "sl-pass-2", "greenlight": "gl-pass-1"})
    assert _bootstrap(server, secrets, master).returncode == 0
    assert server.sql("scalelite_app", "sl-pass-2", "SELECT 1", "scalelite") == "1"
    with pytest.raises(RuntimeError, match="password authentication failed"):
        server.sql("scalelite_app", "sl-pass-1", "SELECT 1", "scalelite")


def _can_login(server: Server, password: str) -> bool:
    try:
        server.sql(MASTER, password, "SELECT 1")
    except RuntimeError:
        return False
    return True
