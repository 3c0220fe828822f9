"""Start real Odoo nodes that share one database and one dkn_auth backend, and talk to them.

ODOO_SRC names an Odoo source tree (14.0-19.0); ODOO_PYTHON the interpreter that has its
requirements (default: this one). Nodes get separate data_dirs, so only dkn_auth can make a
session of one node valid on another.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg2
import requests

ROOT = Path(__file__).resolve().parents[2]
ODOO_SRC = os.environ.get("ODOO_SRC")
ODOO_PYTHON = os.environ.get("ODOO_PYTHON", sys.executable)
ADMIN = ("admin", "admin")


def superuser_dsn() -> str:
    return os.environ.get("DKN_TEST_DB_URI", "postgresql://postgres@127.0.0.1:5432/dkn_auth_test")


def db_params() -> dict:
    params = psycopg2.extensions.parse_dsn(superuser_dsn())
    return {"host": params.get("host", "127.0.0.1"), "port": params.get("port", "5432")}


def odoo_series(src: str) -> tuple[int, int]:
    text = Path(src, "odoo", "release.py").read_text()
    match = re.search(r"^version_info\s*=\s*\((\d+),\s*(\d+)", text, re.M)
    if match is None:  # saas~ or master: version_info = ('saas~17', 1, ...)
        raise RuntimeError(f"cannot read the Odoo series of {src}")
    return int(match.group(1)), int(match.group(2))


def addons_path(src: str, with_repo: bool = True) -> str:
    paths = [str(ROOT)] if with_repo else []
    for candidate in ("addons", "odoo/addons"):
        if Path(src, candidate).is_dir():
            paths.append(str(Path(src, candidate)))
    return ",".join(paths)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _connect(dbname: str = "postgres"):
    params = psycopg2.extensions.parse_dsn(superuser_dsn())
    params["dbname"] = dbname
    conn = psycopg2.connect(**params)
    conn.autocommit = True
    return conn


def ensure_database(src: str, db_user: str = "odoo") -> str:
    """A database with base and web installed for this series, made once and then reused."""
    series = odoo_series(src)
    dbname = f"dkn_odoo_{series[0]}_{series[1]}"
    with contextlib.closing(_connect()) as conn, conn.cursor() as cr:
        cr.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (db_user,))
        if not cr.fetchone():
            cr.execute(f'CREATE ROLE "{db_user}" LOGIN CREATEDB')  # Odoo refuses the postgres user
        cr.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
        if cr.fetchone():
            return dbname
    workdir = tempfile.mkdtemp(prefix="dkn-odoo-init-")
    try:
        cmd = [ODOO_PYTHON, str(Path(src, "odoo-bin")), "-d", dbname, "-i", "base,web",
               "--stop-after-init", "--without-demo=all", "--addons-path", addons_path(src),
               "--db_host", db_params()["host"], "--db_port", str(db_params()["port"]),
               "--db_user", db_user, "--data-dir", workdir, "--log-level", "warn"]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            with contextlib.suppress(Exception), contextlib.closing(_connect()) as conn:
                conn.cursor().execute(f'DROP DATABASE IF EXISTS "{dbname}"')
            raise RuntimeError(f"installing base,web failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        # A tree may ship an auto-install module whose dependency it lacks: left "to install",
        # it makes every registry load of the nodes retry it. Nothing here needs it.
        with contextlib.closing(_connect(dbname)) as conn, conn.cursor() as cr:
            cr.execute("UPDATE ir_module_module SET state = 'uninstalled' WHERE state = 'to install'")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return dbname


class Node:
    """One Odoo server process with its own data_dir and port."""

    def __init__(self, name: str, src: str, dbname: str, settings: dict[str, str], via_env: bool,
                 workers: int, extra_options: dict[str, str] | None = None,
                 extra_env: dict[str, str] | None = None) -> None:
        self.name, self.src, self.dbname = name, src, dbname
        self.settings, self.via_env, self.workers = settings, via_env, workers
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"dkn-odoo-{name}-"))
        self.logfile = self.dir / "odoo.log"
        self.extra_options = extra_options or {}
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        options = {
            "addons_path": addons_path(self.src),
            "data_dir": str(self.dir / "data"),
            "db_host": db_params()["host"], "db_port": str(db_params()["port"]), "db_user": "odoo",
            "db_name": self.dbname, "dbfilter": f"^{self.dbname}$", "list_db": "False",
            "http_interface": "127.0.0.1", "http_port": str(self.port),
            "gevent_port": str(free_port()), "longpolling_port": str(free_port()),
            "workers": str(self.workers), "max_cron_threads": "0",
            "server_wide_modules": "base,web,dkn_auth",
            "logfile": str(self.logfile), "log_level": "info",
            **self.extra_options,
        }
        if not self.via_env:
            options.update({f"dkn_auth_{k}": v for k, v in self.settings.items()})
        if odoo_series(self.src) >= (17, 0):
            options.pop("longpolling_port")
        path = self.dir / "odoo.conf"
        path.write_text("[options]\n" + "".join(f"{k} = {v}\n" for k, v in options.items()))
        return path

    def start(self, timeout: float = 90) -> Node:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DKN_AUTH_")}
        if self.via_env:
            env.update({f"DKN_AUTH_{k.upper()}": v for k, v in self.settings.items()})
        env.update(self.extra_env)
        self.proc = subprocess.Popen(
            [ODOO_PYTHON, str(Path(self.src, "odoo-bin")), "-c", str(self.write_config())],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.name} exited {self.proc.returncode}:\n{self.log()[-4000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/web/login", timeout=5).status_code == 200:
                    return self
            time.sleep(0.2)
        raise RuntimeError(f"node {self.name} did not answer within {timeout} s:\n{self.log()[-4000:]}")

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def kill(self) -> None:
        """Kill the node and its workers at once, as a crashed machine would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- HTTP, as the web client does it -------------------------------------------------

    def rpc(self, path: str, params: dict, sid: str | None = None) -> tuple[dict, str | None]:
        """JSON-RPC call; returns the response body and the session cookie it set, if any."""
        response = requests.post(
            self.url + path, json={"jsonrpc": "2.0", "method": "call", "id": uuid.uuid4().hex[:8],
                                   "params": params},
            cookies={"session_id": sid} if sid else None, timeout=30)
        response.raise_for_status()
        return response.json(), response.cookies.get("session_id")

    def login(self, login: str = ADMIN[0], password: str = ADMIN[1]) -> str:
        body, sid = self.rpc("/web/session/authenticate",
                             {"db": self.dbname, "login": login, "password": password})
        assert "error" not in body, body
        assert sid, "login set no session cookie"
        return sid

    def uid(self, sid: str) -> int | None:
        """The user this session is logged in as, or None."""
        body, _ = self.rpc("/web/session/get_session_info", {}, sid)
        if "error" in body:
            return None
        return body["result"].get("uid")

    def logout(self, sid: str) -> str | None:
        response = requests.get(self.url + "/web/session/logout", cookies={"session_id": sid},
                                allow_redirects=False, timeout=30)
        assert response.status_code in (200, 303), response.status_code
        return response.cookies.get("session_id")

    def call_kw(self, sid: str, model: str, method: str, args: list, kwargs: dict | None = None):
        body, _ = self.rpc(f"/web/dataset/call_kw/{model}/{method}",
                           {"model": model, "method": method, "args": args, "kwargs": kwargs or {}}, sid)
        assert "error" not in body, body
        return body.get("result")  # Odoo leaves "result" out when it is None


class Cluster:
    """Two (or more) nodes with the same dkn_auth settings."""

    def __init__(self, src: str, settings: dict[str, str], via_env: bool = False, workers: int = 0,
                 size: int = 2, **node_options) -> None:
        self.dbname = ensure_database(src)
        self.nodes = [Node(chr(ord("a") + i), src, self.dbname, settings, via_env, workers, **node_options)
                      for i in range(size)]

    def __enter__(self) -> Cluster:
        try:
            for node in self.nodes:
                node.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for node in self.nodes:
            node.stop()
