"""Which callback URLs may be called: http or https, and an address that is public unless the
operator's allow-list (LIVECODE_WEBHOOK_ALLOW) opens its host name or its range.

The check runs twice: at submit time, when the host name resolves then (a refusal is a 400), and
at delivery time against the address the socket actually connected to (sender.py), so a name
that resolves to a public address at submit time and to 127.0.0.1 later (DNS rebinding) is
refused too.

An IPv6 address that carries an IPv4 address is judged by the IPv4 address it leads to:
IPv4-mapped (::ffff:0:0/96), IPv4-compatible (::/96), NAT64 (64:ff9b::/96 and the local-use
64:ff9b:1::/48, the last 32 bits), 6to4 (2002::/16) and Teredo (2001::/32: its server, and its
client, whose address is the last 32 bits inverted). So 2002:7f00:1:: is 127.0.0.1, and
64:ff9b::a9fe:a9fe is the metadata address. A local-use NAT64 address is refused even when its
last 32 bits are public: the site picks the prefix length, so the IPv4 address may sit elsewhere."""

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
        return ipaddress.ip_address(value.split("%", 1)[0])
    except ValueError:
        return None


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052's well-known prefix
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: a site's own prefix, of its own length
_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated IPv4-compatible addresses
_OPEN = "an operator may allow it with LIVECODE_WEBHOOK_ALLOW"


def embedded(ip: IPAddress) -> tuple[tuple[str, ipaddress.IPv4Address], ...]:
    """The IPv4 addresses an IPv6 address leads to, each with the form that carries it; empty
    for an address that carries none."""
    if isinstance(ip, ipaddress.IPv4Address):
        return ()
    if ip.ipv4_mapped is not None:
        return (("IPv4-mapped", ip.ipv4_mapped),)
    if ip in _NAT64 or ip in _NAT64_LOCAL:  # the last 32 bits (RFC 6052's /96 layout)
        return (("NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)),)
    if ip.sixtofour is not None:
        return (("6to4", ip.sixtofour),)
    if ip.teredo is not None:
        server, client = ip.teredo
        return (("Teredo server", server), ("Teredo client", client))
    if ip in _COMPATIBLE and not (ip.is_loopback or ip.is_unspecified):  # ::1 and :: are IPv6's own
        return (("IPv4-compatible", ipaddress.IPv4Address(int(ip))),)
    return ()


def _kind(ip: IPAddress) -> str | None:
    """What makes `ip` not public, or None when it is."""
    if ip.is_loopback:
        return "loopback"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_link_local:
        return "link-local (the cloud metadata address among them)"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    if ip.is_reserved or not ip.is_global:
        return "not a public address"
    return None


def address_refusal(address: str, host: str, allow: Iterable[str]) -> str | None:
    """Why `address` (reached for `host`) may not be called, or None when it may. An address that
    carries an IPv4 address is judged by it (each one, for the forms that carry two)."""
    allowed = tuple(allow)
    if host.lower() in allowed:
        return None
    ip = _ip(address)
    if ip is None:
        return f"{address!r} is not an IP address"
    networks = []
    for entry in allowed:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            continue  # a host name entry
    if any(ip in net for net in networks):
        return None
    inner = embedded(ip)
    for form, v4 in inner or (("", ip),):
        if any(v4 in net for net in networks):
            continue
        kind = _kind(v4)
        if kind:
            shown = f"{ip} ({form} for {v4})" if form else str(ip)
            return f"the callback address {shown} is {kind}; {_OPEN}"
    if ip in _NAT64_LOCAL:
        # The site picks the prefix length (RFC 6052 allows /48 to /96): the IPv4 address may sit
        # elsewhere than the last 32 bits, so a public reading of those proves nothing.
        return f"the callback address {ip} is a local-use NAT64 address (64:ff9b:1::/48); {_OPEN}"
    return None


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
