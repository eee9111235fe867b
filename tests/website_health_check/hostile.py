"""Hostile web servers for the health check's engine tests, run as a subprocess (stdlib only).

Each behaviour listens on its own port of 127.0.0.1. When every one listens, the script prints
one JSON line ``{"behaviour": port, ...}`` on stdout; it exits when its stdin closes (the test
process ending, or its fixture closing the pipe). Run in another process so that nothing these
servers do (threads, sockets, a busy writer) counts against the process whose leaks are measured.

Behaviours (every one reads the request first, then):
- ``slow_header``: the status line, then one header byte per second, for ever;
- ``slow_body_length``: complete headers with Content-Length: 100000, then one body byte a second;
- ``slow_body_close``: headers without Content-Length, Connection: close, then one byte a second;
- ``endless_chunked``: Transfer-Encoding: chunked, small chunks as fast as the client reads them;
- ``slow_chunked``: Transfer-Encoding: chunked, a 1-byte chunk every second, for ever;
- ``silent``: reads, never answers;
- ``reset``: reads the request, then closes with a RST (SO_LINGER on, 0 s);
- ``huge_headers``: the status line, then ~10 MB of ``X-a: b`` header lines, never the blank line;
- ``utf8_no_charset``: 200, ``Content-Type: text/html`` without a charset, a UTF-8 page;
- ``latin1_no_type``: 200, no Content-Type at all, a Latin-1 page;
- ``meta_1252``: 200, ``text/html`` without a charset, ``<meta charset="windows-1252">``, a cp1252 page;
- ``ok``: a plain, fast 200 page.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import sys
import threading
from collections.abc import Awaitable, Callable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

UTF8_TEXT = "Größe und Preis – €"
LATIN1_TEXT = "Café crème"
CP1252_TEXT = "naïve ‘quotes’"
HUGE_HEADERS_BYTES = 10 * 1024 * 1024
TICK_S = 1.0  # the slow behaviours' pace


async def read_request(reader: asyncio.StreamReader) -> None:
    """The request's head (a GET has no body); returns early on EOF or an oversized head."""
    try:
        await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return


async def send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


def page(body: bytes, content_type: str | None) -> bytes:
    head = ["HTTP/1.1 200 OK", f"Content-Length: {len(body)}", "Connection: close"]
    if content_type is not None:
        head.insert(1, f"Content-Type: {content_type}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


def fixed(answer: bytes) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await send(writer, answer)

    return handle


async def slow_header(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    await send(writer, b"HTTP/1.1 200 OK\r\n")
    line = b"X-Slow: "
    while True:  # a header line that never ends, one byte a second
        for byte in line:
            await send(writer, bytes([byte]))
            await asyncio.sleep(TICK_S)
        line = b"a"


async def slow_body_length(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    await send(writer, b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 100000\r\n\r\n")
    while True:
        await send(writer, b"a")
        await asyncio.sleep(TICK_S)


async def slow_body_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    await send(writer, b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n")
    while True:
        await send(writer, b"a")
        await asyncio.sleep(TICK_S)


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n"


async def endless_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    await send(writer, CHUNKED_HEAD)
    chunk = b"10\r\n" + b"<p>endless</p>\r\n" + b"\r\n"  # 16 bytes of data a chunk
    batch = chunk * 256
    while True:  # as fast as the client takes them (drain waits for it)
        await send(writer, batch)


async def slow_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    await send(writer, CHUNKED_HEAD)
    while True:
        await send(writer, b"1\r\na\r\n")
        await asyncio.sleep(TICK_S)


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await reader.read(65536):  # reads whatever comes, until the client goes away
        pass


async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()  # close() with linger 0 s: a RST, not a FIN


async def huge_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    await send(writer, b"HTTP/1.1 200 OK\r\n")
    batch = b"X-a: b\r\n" * 8192
    sent = 0
    while sent < HUGE_HEADERS_BYTES:
        await send(writer, batch)
        sent += len(batch)
    while await reader.read(65536):  # never the blank line: hold the connection until the client goes
        pass


BEHAVIOURS: dict[str, Handler] = {
    "slow_header": slow_header,
    "slow_body_length": slow_body_length,
    "slow_body_close": slow_body_close,
    "endless_chunked": endless_chunked,
    "slow_chunked": slow_chunked,
    "silent": silent,
    "reset": reset,
    "huge_headers": huge_headers,
    "utf8_no_charset": fixed(
        page(f"<html><body><p>{UTF8_TEXT}</p></body></html>".encode(), "text/html"),
    ),
    "latin1_no_type": fixed(
        page(f"<html><body>{LATIN1_TEXT}</body></html>".encode("latin-1"), None),
    ),
    "meta_1252": fixed(
        page(
            (
                '<html><head><meta charset="windows-1252"><title>t</title></head>'
                f"<body><p>{CP1252_TEXT}</p></body></html>"
            ).encode("cp1252"),
            "text/html",
        ),
    ),
    "ok": fixed(page(b"<html><body>Welcome</body></html>", "text/html; charset=utf-8")),
}


def guarded(handler: Handler) -> Handler:
    """The handler, its connection closed at the end, a client going away (or the script
    stopping) taken calmly."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (ConnectionError, OSError):
            pass  # the client gave up (that is what a health check does to these servers)
        except asyncio.CancelledError:
            pass  # stdin closed: asyncio.run cancels the connections still served (quietly, on 3.11)
        finally:
            writer.close()

    return handle


async def serve() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def watch_stdin() -> None:
        sys.stdin.buffer.read()  # returns at EOF: the parent closed the pipe (or died)
        loop.call_soon_threadsafe(stop.set)

    servers = {
        name: await asyncio.start_server(guarded(handler), "127.0.0.1", 0)
        for name, handler in BEHAVIOURS.items()
    }
    ports = {name: server.sockets[0].getsockname()[1] for name, server in servers.items()}
    threading.Thread(target=watch_stdin, daemon=True).start()
    sys.stdout.write(json.dumps(ports) + "\n")
    sys.stdout.flush()
    await stop.wait()
    for server in servers.values():
        server.close()
    # asyncio.run then cancels the connections still being served, and closes them.


if __name__ == "__main__":
    asyncio.run(serve())
