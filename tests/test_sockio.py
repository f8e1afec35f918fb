"""broker/net/sockio.py over real sockets on 127.0.0.1: the read and write shortcuts keep what
anyio's stream promises (every byte, in order, then EndOfStream), and without the asyncio
internals the stream's own calls serve."""

from __future__ import annotations

import socket
from typing import Any

import anyio
import pytest
from anyio.abc import SocketStream

from broker.net.sockio import SocketIO

WAIT = 10.0


class _Plain:
    """anyio's stream seen only through its public methods (as another backend would be)."""

    def __init__(self, stream: SocketStream) -> None:
        self._s = stream

    def __getattr__(self, name: str) -> Any:
        if name in ("_transport", "_protocol"):
            raise AttributeError(name)
        return getattr(self._s, name)


async def _pair() -> tuple[SocketStream, socket.socket, Any]:
    """A server-side anyio stream and the blocking client socket at its other end."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    client = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    with anyio.fail_after(WAIT):
        server = await listener.listeners[0].accept()
    return server, client, listener


async def _read_all(io: SocketIO) -> bytes:
    got = bytearray()
    with anyio.fail_after(WAIT):
        while True:
            try:
                got += await io.receive(1000)  # smaller than what arrives: chunks are split
            except anyio.EndOfStream:
                return bytes(got)


@pytest.mark.parametrize("plain", [False, True], ids=["shortcut", "public-calls"])
def test_every_byte_in_order_then_end_of_stream(plain: bool) -> None:
    data = bytes(range(256)) * 4000  # ~1 MB

    async def main() -> None:
        server, client, listener = await _pair()
        io = SocketIO(_Plain(server) if plain else server)  # type: ignore[arg-type]
        assert (io._protocol is None) == plain

        def send() -> None:
            client.sendall(data)
            client.shutdown(socket.SHUT_WR)

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.to_thread.run_sync, send)
                got = await _read_all(io)
            assert got == data
        finally:
            client.close()
            await server.aclose()
            await listener.aclose()

    anyio.run(main, backend="asyncio")


def test_write_now_stops_at_a_slow_peer_and_the_rest_follows_in_order() -> None:
    from broker.net.output import OutputBuffer

    class Chunks(OutputBuffer):  # an output buffer fed directly, not from a proton transport
        def __init__(self, chunks: list[bytes]) -> None:
            super().__init__(None)  # type: ignore[arg-type]
            for c in chunks:
                self._chunks.append(c)
                self.size += len(c)

    chunks = [bytes([i]) * 256 * 1024 for i in range(64)]  # 16 MiB: more than socket buffers

    async def main() -> None:
        server, client, listener = await _pair()
        io = SocketIO(server)
        out = Chunks(chunks)
        try:
            assert io.write_now(out) is False  # the peer reads nothing yet: some is left
            assert out and io.unsent() > 0
            assert io.write_now(out) is False  # the transport holds data: no second go
            received = bytearray()

            def read() -> None:
                client.settimeout(WAIT)
                while len(received) < sum(map(len, chunks)):
                    received.extend(client.recv(1 << 20))

            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.to_thread.run_sync, read)
                while out:  # what the writer task does with the rest
                    data = out.take()
                    await io.send(data)
                    out.sent(len(data))
            assert bytes(received) == b"".join(chunks)
        finally:
            client.close()
            await server.aclose()
            await listener.aclose()

    anyio.run(main, backend="asyncio")
