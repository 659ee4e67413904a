"""Where webhooks may go: http(s) URLs on public addresses only, checked before any connection.

A URL is checked when it is registered and again before every delivery, against the addresses
its host resolves to then (a name can be re-pointed at an internal address after registration:
DNS rebinding). The delivery then connects to an address that passed the check, never resolving
the name a second time.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

from timeline.domain.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]
MAX_URL_LENGTH = 2000


class RefusedURL(InvalidInput):
    """A webhook URL that the tracker will not call."""


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect, and what to tell the server it is."""

    scheme: str
    host: str  # the name (or literal) from the URL, for the Host header and TLS
    port: int
    path: str  # path and query, as sent in the request line
    addresses: tuple[str, ...]  # resolved addresses that passed the check, in resolver order

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses a host resolves to; an IP literal in any form resolves without DNS."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            return []
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in seen:
            seen.append(address)
    return seen


def _as_ip(address: str) -> IPAddress:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return ip


def is_public(address: str) -> bool:
    """False for loopback, private, link-local, unique-local, multicast, reserved and unspecified."""
    ip = _as_ip(address)
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


def _refuse(detail: str, reason: str) -> RefusedURL:
    return RefusedURL(detail, {"url": reason})


def parse_target_url(url: str) -> tuple[str, str, int, str]:
    """Scheme, host, port and request path of an http(s) URL, or :class:`RefusedURL`."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise _refuse("The webhook URL is missing or too long.", "must be an http(s) URL")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise _refuse(f"The webhook URL is not valid: {exc}.", "is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise _refuse(
            f"Webhook URLs must use http or https, not {scheme or 'no scheme'!r}.",
            "must use http or https",
        )
    if not parts.hostname:
        raise _refuse("The webhook URL names no host.", "names no host")
    if parts.username is not None or parts.password is not None:
        raise _refuse(
            "The webhook URL must not carry credentials; deliveries are signed instead.",
            "must not contain a user name or password",
        )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80), path


def check_url(url: str, allow_private: bool = False, resolver: Resolver = system_resolver) -> Target:
    """The URL's target if the tracker may call it; :class:`RefusedURL` otherwise.

    Nothing is connected to: the host is only resolved (an IP literal without any lookup).
    """
    scheme, host, port, path = parse_target_url(url)
    addresses = resolver(host, port)
    if not addresses:
        raise _refuse(f"The webhook host {host!r} does not resolve.", "host does not resolve")
    if not allow_private:
        for address in addresses:
            try:
                public = is_public(address)
            except ValueError:
                public = False
            if not public:
                raise _refuse(
                    f"The webhook host {host!r} resolves to {address}, a loopback, private, "
                    "link-local or multicast address; such URLs are refused unless "
                    "TIMELINE_WEBHOOK_ALLOW_PRIVATE=1.",
                    "resolves to a loopback, private, link-local or multicast address",
                )
    return Target(scheme, host, port, path, tuple(addresses))
