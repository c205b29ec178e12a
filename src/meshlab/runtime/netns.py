"""Talking to a network namespace from a process that lives outside it.

Linux lets one thread of a process switch to another network namespace (setns) while
the others stay where they are, and a socket belongs to the namespace it was made in.
So a dedicated thread that has entered a pod's namespace can open connections there on
behalf of the whole process: `NetnsTransport` runs every HTTP request of an httpx
client on such a thread, which is how the runtime probes services in pods and how
checks reach them, without any address of a pod being visible outside it.
"""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, TypeVar

import httpx

from meshlab.runtime.enter import enter_netns as enter

T = TypeVar("T")


class Namespace:
    """A thread living in the network namespace at PATH; `run(fn)` calls FN there."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netns",
                                          initializer=enter, initargs=(self.path,))

    def run(self, fn: Callable[[], T]) -> T:
        return self._thread.submit(fn).result()

    def can_connect(self, host: str, port: int, timeout: float = 0.5) -> bool:
        def attempt() -> bool:
            try:
                with socket.create_connection((host, port), timeout=timeout):
                    return True
            except OSError:
                return False
        return self.run(attempt)

    def close(self) -> None:
        self._thread.shutdown(wait=False)


class NetnsTransport(httpx.BaseTransport):
    """An httpx transport whose connections are opened inside a network namespace (a
    NAMESPACE thread, shared by several transports, or a path for one of its own)."""

    def __init__(self, namespace: "Namespace | str | Path", *, uds: str | None = None):
        """UDS: a Unix socket to send every request to instead (an abstract one,
        "\0name", is looked up in the namespace)."""
        self._owns_thread = not isinstance(namespace, Namespace)
        self.namespace = Namespace(namespace) if self._owns_thread else namespace
        self._inner = httpx.HTTPTransport(uds=uds)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        def send() -> httpx.Response:
            response = self._inner.handle_request(request)
            response.read()  # the whole body here, so no socket is touched elsewhere
            return response
        return self.namespace.run(send)

    def close(self) -> None:
        self.namespace.run(self._inner.close)
        if self._owns_thread:
            self.namespace.close()


def client(path: str | Path, **options) -> httpx.Client:
    """An httpx client whose requests leave from the network namespace at PATH."""
    return httpx.Client(transport=NetnsTransport(path), trust_env=False, **options)
