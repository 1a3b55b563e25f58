"""SSRF guard: resolve the webhook host and refuse loopback, private, link-local and other internal targets.

The check runs on the addresses DNS returns (not on the name), and the request is then pinned to the checked
address so a second lookup cannot rebind the name to an internal one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit


class TargetRefused(Exception):
    """The URL points somewhere we must not call."""


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str  # as written in the URL (for Host and SNI)
    port: int
    address: str  # the checked IP the request goes to
    path: str  # path + query

    def pinned_url(self) -> str:
        ip = ipaddress.ip_address(self.address)
        host = f"[{ip}]" if ip.version == 6 else str(ip)
        return f"{self.scheme}://{host}:{self.port}{self.path}"

    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def check_address(addr: str, *, allow_loopback: bool, allow_private: bool) -> None:
    """Raise TargetRefused for an address that is not a public unicast one (unless settings allow the class)."""
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        if allow_loopback:
            return
        raise TargetRefused(f"{addr} is a loopback address")
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        raise TargetRefused(f"{addr} is not a unicast address")
    if ip.is_link_local:
        if allow_private:
            return
        raise TargetRefused(f"{addr} is a link-local address")
    if ip.is_private or not ip.is_global:
        if allow_private:
            return
        raise TargetRefused(f"{addr} is a private address")


async def resolve_target(url: str, *, allow_loopback: bool, allow_private: bool) -> Target:
    """Parse and resolve ``url``; every address the name resolves to must pass :func:`check_address`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise TargetRefused(f"scheme {parts.scheme!r} is not allowed")
    if parts.username or parts.password:
        raise TargetRefused("credentials in the URL are not allowed")
    host = parts.hostname
    if not host:
        raise TargetRefused("URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise TargetRefused(f"bad port: {exc}") from None
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise TargetRefused(f"cannot resolve {host!r}: {exc}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise TargetRefused(f"{host!r} has no address")
    for addr in addresses:
        check_address(addr, allow_loopback=allow_loopback, allow_private=allow_private)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme=parts.scheme, host=host, port=port, address=addresses[0], path=path)
