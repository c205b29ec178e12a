"""A TCP relay from a pod's outside address to the same port on its 127.0.0.1.

Docker forwards a published port to the container's own address (eth0), never to its
loopback, and the labs' services bind 127.0.0.1 as the course asks. The pod's first
container (the namespace owner every service joins) runs this relay, so a port published
on the host's 127.0.0.1 reaches a service listening on the pod's 127.0.0.1, unchanged.
A connection to a port nothing listens on yet is closed at once, so a probe sees the
difference between "the relay is up" and "the service is up".

    python -m meshlab.container.relay 8080 10000 9901
"""

from __future__ import annotations

import asyncio
import socket
import sys


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            writer.close()


async def _handle(port: int, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        client_writer.close()
        return
    for writer in (client_writer, upstream_writer):
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await asyncio.gather(_pump(client_reader, upstream_writer), _pump(upstream_reader, client_writer))
    client_writer.close()
    upstream_writer.close()


async def relay(ports: list[int]) -> None:
    # The pod's own address: bound separately from 127.0.0.1, so the services can still
    # bind 127.0.0.1:PORT themselves.
    address = socket.gethostbyname(socket.gethostname())
    servers = [await asyncio.start_server(lambda r, w, p=port: _handle(p, r, w), address, port)
               for port in ports]
    print(f"relaying {address}:{{{','.join(map(str, ports))}}} to 127.0.0.1", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


if __name__ == "__main__":
    asyncio.run(relay([int(port) for port in sys.argv[1:]]))
