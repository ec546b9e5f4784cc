"""A byte pipe between a TCP port and a Unix socket, for servers run in a network namespace.

Some servers listen on every interface and cannot be told otherwise (Orthanc 1.10). Tests run
them in a network namespace of their own (``unshare -n``: only a loopback there), and reach
them through a Unix socket, which lives in the file system and so crosses namespaces: inside,
``unix → tcp`` forwards the socket to the server's port; outside, ``tcp → unix`` offers it on
127.0.0.1 of the host.

    python -m medagent.testing._bridge unix-to-tcp SOCKET 127.0.0.1:8042
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
from pathlib import Path

__all__ = ["TcpToUnixBridge", "main"]

_CHUNK = 65536


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            writer.close()


async def _splice(
    client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    await asyncio.gather(_pump(client[0], upstream[1]), _pump(upstream[0], client[1]))


async def _unix_to_tcp(socket_path: Path, host: str, port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        await _splice((reader, writer), upstream)

    server = await asyncio.start_unix_server(handle, path=str(socket_path))
    async with server:
        await server.serve_forever()


class TcpToUnixBridge:
    """127.0.0.1:``port`` of this namespace, piped to ``socket_path``; runs in a thread."""

    def __init__(self, socket_path: Path, port: int) -> None:
        self.socket_path = socket_path
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, name="tcp-unix-bridge", daemon=True)

    def start(self) -> TcpToUnixBridge:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                upstream = await asyncio.open_unix_connection(str(self.socket_path))
            except OSError:
                writer.close()
                return
            await _splice((reader, writer), upstream)

        self._server = self._loop.run_until_complete(
            asyncio.start_server(handle, "127.0.0.1", self.port)
        )
        self._ready.set()
        self._loop.run_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="Pipe a Unix socket to a TCP address.")
    parser.add_argument("mode", choices=["unix-to-tcp"])
    parser.add_argument("socket", type=Path)
    parser.add_argument("target", help="HOST:PORT")
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    asyncio.run(_unix_to_tcp(args.socket, host, int(port)))


if __name__ == "__main__":
    main()
