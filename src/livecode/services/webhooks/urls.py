"""Which callback URLs may be called: http or https, and an address that is public unless the
operator's allow-list (LIVECODE_WEBHOOK_ALLOW) opens its host name or its range.

The check runs twice: at submit time, when the host name resolves then (a refusal is a 400), and
at delivery time against the address the socket actually connected to (sender.py), so a name
that resolves to a public address at submit time and to 127.0.0.1 later (DNS rebinding) is
refused too."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from ...errors import ValidationError

MAX_URL_LENGTH = 2048
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> addresses; socket.getaddrinfo by default, a stand-in in unit tests.
Resolver = Callable[[str, int], list[str]]


class RefusedUrl(ValueError):
    """A callback URL that may not be called; the message says why."""


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str  # lower-case, without brackets
    port: int
    path: str  # path and query, at least "/"


def parse_url(url: object) -> Target:
    """The parts of an acceptable URL; RefusedUrl for anything that is not an absolute http(s) URL."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise RefusedUrl(f"a callback URL must be a string of 1 to {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise RefusedUrl("a callback URL must not contain spaces or control characters")
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RefusedUrl(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise RefusedUrl("a callback URL must be http:// or https://")
    host = (parts.hostname or "").lower()
    if not host:
        raise RefusedUrl("a callback URL must name a host")
    if parts.username is not None or parts.password is not None:
        raise RefusedUrl("a callback URL must not carry credentials (user:password@)")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(url, parts.scheme, host, port or (443 if parts.scheme == "https" else 80), path)


def _ip(value: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(value.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return ip


def address_refusal(address: str, host: str, allow: Iterable[str]) -> str | None:
    """Why `address` (reached for `host`) may not be called, or None when it may."""
    allowed = tuple(allow)
    if host.lower() in allowed:
        return None
    ip = _ip(address)
    if ip is None:
        return f"{address!r} is not an IP address"
    for entry in allowed:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return None
        except ValueError:
            continue  # a host name entry
    if ip.is_loopback:
        kind = "loopback"
    elif ip.is_link_local:
        kind = "link-local (the cloud metadata address among them)"
    elif ip.is_multicast:
        kind = "multicast"
    elif ip.is_private:
        kind = "private"
    elif ip.is_unspecified or ip.is_reserved or not ip.is_global:
        kind = "not a public address"
    else:
        return None
    return f"the callback address {ip} is {kind}; an operator may allow it with LIVECODE_WEBHOOK_ALLOW"


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_url(url: object, allow: Iterable[str], resolve: Resolver = system_resolver) -> Target:
    """Submit-time check: the URL's shape, and every address its host resolves to now. A host that
    does not resolve now is accepted (it may later); delivery checks the address again."""
    target = parse_url(url)
    allowed = tuple(allow)
    literal = _ip(target.host)
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            addresses = resolve(target.host, target.port)
        except (OSError, UnicodeError):
            addresses = []
    for address in addresses:
        why = address_refusal(address, target.host, allowed)
        if why:
            raise RefusedUrl(why)
    return target


def check_callback(url: object, allow: Iterable[str], field: str = "callback_url") -> str:
    """check_url for a request: a ValidationError (400, INVALID_CALLBACK_URL) naming the field."""
    try:
        return check_url(url, allow).url
    except RefusedUrl as exc:
        raise ValidationError(f"{field}: {exc}", code="INVALID_CALLBACK_URL", details={"field": field}) from None


def scrub(text: str | None, url: str) -> str | None:
    """`text` (a delivery error) without what access.shown_to_member hides of `url`."""
    if not text:
        return text
    parts = urlsplit(url)
    for secret in (url, parts.path + (f"?{parts.query}" if parts.query else ""), parts.query):
        if secret and secret != "/":
            text = text.replace(secret, "…")
    return text
