"""A minimal HTTP/1.1 keep-alive client for load generation: no client library between the bytes and the socket.

The load generator shares the machine's 2 cores with the server it measures. httpx costs about 1 ms of CPU per
GET and 2 ms per JSON POST on these machines, so a benchmark driven by it measures httpx: it was 96-100% busy
while the server it drove was half idle. This client costs a few tens of microseconds per request. It handles what
the services answer with: responses with a Content-Length (FastAPI's JSON and problem+json responses).
"""

from __future__ import annotations

import asyncio

import httpx


class Broken(Exception):
    """The connection broke before a whole response arrived (the request may or may not have been applied)."""


class RawHttp:
    """Keep-alive requests to one server: a connection is taken from the idle list, or opened, per request."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None, timeout_s: float = 60.0) -> None:
        url = httpx.URL(base_url)
        self.host, self.port = url.host, url.port or 80
        self.netloc = f"{self.host}:{self.port}"
        self.default_head = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.timeout_s = timeout_s
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        return await self.request("POST", path, body, headers)

    async def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        return await self.request("GET", path, None, headers)

    async def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """(status, body); raises Broken when the connection fails before the whole response."""
        conn = None
        while self.idle:
            candidate = self.idle.pop()
            if not candidate[0].at_eof():  # the server may have closed an idle connection
                conn = candidate
                break
            candidate[1].close()
        head = self.default_head + "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        if body is not None:
            head += f"Content-Length: {len(body)}\r\n"
        try:
            async with asyncio.timeout(self.timeout_s):
                if conn is None:
                    conn = await asyncio.open_connection(self.host, self.port)
                reader, writer = conn
                writer.write(
                    f"{method} {path} HTTP/1.1\r\nHost: {self.netloc}\r\n{head}\r\n".encode() + (body or b"")
                )
                raw_head = await reader.readuntil(b"\r\n\r\n")
                lines = raw_head.decode("latin-1").split("\r\n")
                status = int(lines[0].split(" ", 2)[1])
                fields = {
                    k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)
                }
                content = await reader.readexactly(int(fields.get("content-length", "0")))
        except (OSError, TimeoutError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
            if conn is not None:
                conn[1].close()
            raise Broken(f"{type(exc).__name__}: {exc}") from exc
        if fields.get("connection", "").lower() == "close":
            writer.close()
        else:
            self.idle.append(conn)
        return status, content

    async def aclose(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()
