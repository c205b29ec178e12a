"""The ADS server: Envoy's aggregated discovery service on grpcio's asyncio API.

    cache = SnapshotCache()
    server = XdsServer(cache, port=18000, admin_port=18001)
    await server.start()
    cache.set_snapshot("envoy-1", Snapshot([...]))   # every connected envoy-1 follows
    await server.wait_closed()

Both protocols are served on one port: state of the world (`StreamAggregatedResources`,
Envoy's `api_type: GRPC`) and incremental (`DeltaAggregatedResources`, `DELTA_GRPC`).
Every stream is a coroutine on one event loop, not a thread: a synchronous grpcio
server holds a worker thread per stream and stops serving new proxies when its pool is
used up; here a thousand streams cost a thousand small objects.

`serve_in_thread` runs a server on an event loop of its own in a background thread,
for code that is not asynchronous (tests, benchmarks, a synchronous control plane).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import AsyncIterator

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc
from google.protobuf.message import Message

from meshlab.errors import PortBusy
from meshlab.xds import admin
from meshlab.xds.cache import SnapshotCache
from meshlab.xds.delta import DeltaStream
from meshlab.xds.sotw import SotwStream
from meshlab.xds.status import StatusBoard
from meshlab.xds.stream import Stream, Waker, XdsProtocolError

log = logging.getLogger("meshlab.xds")

_END = object()
# grpcio lets a second server bind a busy port (SO_REUSEPORT) and share its proxies.
_GRPC_OPTIONS = [("grpc.so_reuseport", 0)]


class XdsServer:
    def __init__(self, cache: SnapshotCache, *, host: str = "127.0.0.1", port: int = 0,
                 admin_port: int | None = None, stage_timeout: float = 5.0):
        self.cache = cache
        self.host = host
        self.port = port
        self.admin_port = admin_port
        self.stage_timeout = stage_timeout
        self.board = StatusBoard()
        self._grpc: grpc.aio.Server | None = None
        self._admin: asyncio.AbstractServer | None = None
        self._waker: Waker | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        """Listen for proxies (and serve the admin view, if it has a port)."""
        server = grpc.aio.server(options=_GRPC_OPTIONS)
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(_Servicer(self), server)
        try:
            bound = server.add_insecure_port(f"{self.host}:{self.port}")
        except RuntimeError:
            bound = 0
        if not bound:
            raise PortBusy(f"the xDS server cannot listen on {self.host}:{self.port}",
                           fix="another process holds the port (a control plane still running?); stop it or "
                               "choose another port")
        self.port = bound
        await server.start()
        self._grpc = server
        if self.admin_port is not None:
            self._admin = await admin.start(self.cache, self.board, self.host, self.admin_port)
            self.admin_port = self._admin.sockets[0].getsockname()[1]
        log.info("xDS server listening on %s%s", self.address,
                 f"; admin view on http://{self.host}:{self.admin_port}/" if self._admin else "")

    async def stop(self, grace: float | None = 0.5) -> None:
        if self._admin is not None:
            self._admin.close()
            await self._admin.wait_closed()
            self._admin = None
        if self._grpc is not None:
            await self._grpc.stop(grace)
            self._grpc = None

    async def wait_closed(self) -> None:
        if self._grpc is not None:
            await self._grpc.wait_for_termination()

    def status(self) -> dict:
        """The admin view's document: snapshots, connected proxies, last NACKs. Call it
        on the server's event loop (it reads the streams' bookkeeping)."""
        return admin.status(self.cache, self.board)

    async def _serve(self, stream_class: type[Stream], requests: AsyncIterator[Message],
                     context: grpc.aio.ServicerContext) -> AsyncIterator[Message]:
        outbox: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        if self._waker is None or self._waker.loop is not loop:
            self._waker = Waker(loop)
        stream = stream_class(self.cache, self.board, peer=context.peer(), emit=outbox.put_nowait,
                              loop=loop, waker=self._waker, stage_timeout=self.stage_timeout)

        async def read() -> None:
            try:
                async for request in requests:
                    stream.receive(request)
            except XdsProtocolError as error:
                outbox.put_nowait(error)
            except (asyncio.CancelledError, grpc.aio.AioRpcError):
                pass  # the proxy went away
            except Exception as error:  # noqa: BLE001 - a bug must close this stream, not the server
                log.exception("stream %s failed", stream)
                outbox.put_nowait(error)
            finally:
                outbox.put_nowait(_END)

        reader = asyncio.create_task(read())
        try:
            while True:
                item = await outbox.get()
                if item is _END:
                    return
                if isinstance(item, Exception):
                    code = grpc.StatusCode.INVALID_ARGUMENT if isinstance(item, XdsProtocolError) \
                        else grpc.StatusCode.INTERNAL
                    await context.abort(code, str(item))
                yield item
        finally:
            reader.cancel()
            stream.close()


class _Servicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, server: XdsServer):
        self._server = server

    async def StreamAggregatedResources(self, request_iterator, context):  # noqa: N802 - gRPC's name
        async for response in self._server._serve(SotwStream, request_iterator, context):
            yield response

    async def DeltaAggregatedResources(self, request_iterator, context):  # noqa: N802 - gRPC's name
        async for response in self._server._serve(DeltaStream, request_iterator, context):
            yield response


class ServerThread:
    """An XdsServer on its own event loop in a daemon thread. Use as a context manager:

        with serve_in_thread(cache) as running:
            ... running.port, running.board ...
    """

    def __init__(self, cache: SnapshotCache, **options: object):
        self.server = XdsServer(cache, **options)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="xds-server", daemon=True)
        self._started = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def board(self) -> StatusBoard:
        return self.server.board

    def start(self) -> "ServerThread":
        if self._started.is_set():
            return self
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._thread.is_alive() and self._stopping is not None:
            self.loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(timeout=10)

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        finally:
            self.loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        try:
            await self.server.start()
        except BaseException as error:  # noqa: BLE001 - handed to the thread that called start()
            self._error = error
            self._started.set()
            return
        self._started.set()
        await self._stopping.wait()
        await self.server.stop(grace=0.2)
        # Let the streams' coroutines finish before the loop closes under them.
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)


def serve_in_thread(cache: SnapshotCache, **options: object) -> ServerThread:
    """A started ServerThread (see there); OPTIONS go to XdsServer."""
    return ServerThread(cache, **options).start()
