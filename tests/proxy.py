"""A TCP proxy on loopback that counts round trips between a client and a server.

A round trip is counted each time the client sends after the server last spoke (or first):
for a request/response protocol that is one network round trip, however many packets or
pipelined commands it holds.
"""

from __future__ import annotations

import socket
import threading


class CountingProxy:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.round_trips = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self._sockets += [client, server]
            turn = {"last": "server"}
            threading.Thread(target=self._pump, args=(client, server, turn, "client"), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, turn, "server"), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, turn: dict, side: str) -> None:
        try:
            while data := source.recv(65536):
                with self._lock:
                    if side == "client" and turn["last"] == "server":
                        self.round_trips += 1
                    turn["last"] = side
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def reset(self) -> None:
        with self._lock:
            self.round_trips = 0

    def close(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            sock.close()
