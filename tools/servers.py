"""Redis and PostgreSQL servers of one's own on spare ports, to pause, kill and restart.

Used by the failure tests and tools/outage.py; they need redis-server and PostgreSQL's
initdb/pg_ctl installed (under root, PostgreSQL runs as user postgres).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout} s")
        time.sleep(0.05)


class RedisServer:
    """A redis-server of the test's own, on a spare port."""

    def __init__(self, *args: str, persistent: bool = False) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="dkn-redis-")
        self.args = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir, "--save", "",
                     "--appendonly", "yes" if persistent else "no", "--appendfsync", "always", *args]
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(["redis-server", *self.args], stdout=subprocess.DEVNULL)
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        wait_for(client.ping, what=f"redis-server on {self.port}")
        return self

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))[-1:]
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed")
    return found if isinstance(found, str) else found[0]


class PostgresServer:
    """A PostgreSQL cluster of the test's own, on a spare port (run as user postgres under root)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="dkn-pg-")
        self.data = os.path.join(self.dir, "data")
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.dir, "postgres")
        subprocess.run([*self.as_user, _pg_bin("initdb"), "-D", self.data, "-U", "postgres", "-A", "trust"],
                       check=True, capture_output=True)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run([*self.as_user, _pg_bin("pg_ctl"), "-D", self.data, *args], check=True,
                       capture_output=True, timeout=60)

    def start(self) -> PostgresServer:
        self._ctl("-w", "-l", os.path.join(self.dir, "log"), "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "stop")

    def proc_state(self) -> str:
        pidfile = os.path.join(self.data, "postmaster.pid")
        return "running" if os.path.exists(pidfile) else "stopped"

    def pids(self) -> list[int]:
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            postmaster = int(f.readline())
        children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True).stdout.split()
        return [postmaster, *map(int, children)]

    def pause(self) -> None:
        for pid in self.pids():
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self.pids():
            os.kill(pid, signal.SIGCONT)

    def kill(self) -> None:
        """The postmaster dies at once, as on a crashed machine; its backends follow."""
        for pid in self.pids():
            os.kill(pid, signal.SIGCONT)
        self.stop("immediate")

    def destroy(self) -> None:
        try:
            self.kill()
        except Exception:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
