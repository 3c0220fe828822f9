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
    """A redis-server of the test's own, on a spare port (``tls``: that port speaks TLS only)."""

    def __init__(self, *args: str, persistent: bool = False, password: str | None = None,
                 tls: Certificates | None = None) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="dkn-redis-")
        self.password, self.tls = password, tls
        port = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", tls.server_cert,
                "--tls-key-file", tls.server_key, "--tls-ca-cert-file", tls.ca] if tls else ["--port", str(self.port)]
        self.args = [*port, "--bind", "127.0.0.1", "--dir", self.dir, "--save", "",
                     "--appendonly", "yes" if persistent else "no", "--appendfsync", "always",
                     *(["--requirepass", password, "--masterauth", password] if password else []), *args]
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"{'rediss' if self.tls else 'redis'}://{auth}127.0.0.1:{self.port}/0"

    def client(self):
        import redis

        tls = {"ssl": True, "ssl_ca_certs": self.tls.ca, "ssl_certfile": self.tls.client_cert,
               "ssl_keyfile": self.tls.client_key} if self.tls else {}
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_connect_timeout=0.5, **tls)

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(["redis-server", *self.args], stdout=subprocess.DEVNULL)
        try:
            wait_for(self.client().ping, what=f"redis-server on {self.port}")
        except BaseException:
            self.kill()
            raise
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


class Certificates:
    """A throwaway CA with a server certificate for 127.0.0.1 and a client certificate (openssl)."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="dkn-tls-")
        self.ca, ca_key = self._path("ca.pem"), self._path("ca.key")
        self._openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=dkn test CA",
                      "-keyout", ca_key, "-out", self.ca)
        self.server_cert, self.server_key = self._issue("server", ca_key, "subjectAltName=IP:127.0.0.1,DNS:localhost")
        self.client_cert, self.client_key = self._issue("client", ca_key, "extendedKeyUsage=clientAuth")

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def _openssl(self, *args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    def _issue(self, name: str, ca_key: str, extension: str) -> tuple[str, str]:
        cert, key, csr, ext = (self._path(f"{name}.{x}") for x in ("pem", "key", "csr", "ext"))
        with open(ext, "w") as f:
            f.write(extension + "\n")
        self._openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", key, "-out", csr)
        self._openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", ca_key, "-CAcreateserial",
                      "-days", "2", "-extfile", ext, "-out", cert)
        return cert, key

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelServer(RedisServer):
    """A redis-server in sentinel mode watching ``master`` under the name mymaster."""

    def __init__(self, master: RedisServer, password: str | None = None) -> None:
        super().__init__()
        conf = os.path.join(self.dir, "sentinel.conf")
        with open(conf, "w") as f:
            f.write(f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
                    f"sentinel monitor mymaster 127.0.0.1 {master.port} 2\n"
                    "sentinel down-after-milliseconds mymaster 1000\n"
                    "sentinel failover-timeout mymaster 5000\n"
                    + (f"sentinel auth-pass mymaster {master.password}\n" if master.password else "")
                    + (f"requirepass {password}\n" if password else ""))
        self.password = password
        self.args = [conf, "--sentinel"]


class RedisCluster:
    """Three redis-servers joined into a Redis Cluster (no replicas)."""

    def __init__(self) -> None:
        self.nodes = [RedisServer("--cluster-enabled", "yes", "--cluster-node-timeout", "2000") for _ in range(3)]

    @property
    def uri(self) -> str:
        return self.nodes[0].uri

    def start(self) -> RedisCluster:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        for node in self.nodes:
            # The bus port defaults to port + 10000, past 65535 for a high spare port.
            node.args += ["--cluster-config-file", os.path.join(node.dir, "nodes.conf"),
                          "--cluster-port", str(free_port())]
            node.start()
        subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=60)
        for node in self.nodes:
            wait_for(lambda node=node: node.client().cluster("info")["cluster_state"] == "ok",
                     what="cluster_state:ok")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))[-1:]
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed")
    return found if isinstance(found, str) else found[0]


class PostgresServer:
    """A PostgreSQL cluster of the test's own, on a spare port (run as user postgres under root)."""

    def __init__(self, *options: str) -> None:
        self.port = free_port()
        self.options = " ".join(options)  # extra server options, e.g. "-c default_transaction_read_only=on"
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
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off {self.options}", "start")
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
