"""Running the ADS server against simulated clients (meshlab.xds.client) in a test."""

from __future__ import annotations

import asyncio

import grpc

from meshlab.xds import SnapshotCache, XdsServer


def run(scenario, **server_options):
    """Run SCENARIO(server, cache, connect) on a fresh loop: an XdsServer (with
    SERVER_OPTIONS) on a free port and its cache; connect(*clients) starts each client's
    stream on one channel. Everything is stopped when the scenario returns or fails."""

    async def main():
        cache = SnapshotCache()
        server = XdsServer(cache, **server_options)
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        tasks = []

        def connect(*clients):
            tasks.extend(asyncio.create_task(client.run(channel)) for client in clients)

        try:
            await scenario(server, cache, connect)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await channel.close()
            await server.stop(0)

    asyncio.run(main())
