"""Where a mailbox secret may send the function: public addresses only, by default.

In a hosted helpdesk the tenant types the ``host`` and the ``auth.token_url``
into the product, which writes the secret: its contents are untrusted input.
Inside a Lambda, 127.0.0.1:9001 is the Runtime API (a POST there can answer
the current invocation); 169.254.169.254 and friends are link-local
services; in a VPC, private addresses reach internal services. So:

- a name is resolved once (``getaddrinfo``), and refused if ANY of its
  addresses is not public: unspecified, loopback, link-local, multicast,
  shared (100.64.0.0/10, CGNAT), private, site-local, reserved or otherwise
  not globally reachable, also when a private IPv4 address hides in an
  IPv6 one (IPv4-mapped, NAT64, 6to4, Teredo);
- the connection goes to the very addresses that were checked, never to the
  name again: a second lookup could answer differently (DNS rebinding). TLS
  still verifies the certificate against the host NAME.

``ALLOW_PRIVATE_HOSTS=true`` (template parameter ``AllowPrivateHosts``) lifts
the rule for deployments that poll their own mail server inside their
network, and for the tests. The resolve-once, connect-to-what-was-resolved
path is the same either way.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pop3_ingest.config import DEFAULT_ALLOW_PRIVATE_HOSTS
from pop3_ingest.errors import AddressRefused, ConnectError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# One ``socket.getaddrinfo`` entry: family, type, proto, canonical name, socket address.
AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[Any, ...]]
# Resolves (host, port) to TCP addresses, as ``socket.getaddrinfo`` does.
Resolver = Callable[[str, int], Sequence[AddrInfo]]

_SHARED = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598, carrier-grade NAT
# RFC 1918, and IPv6 unique local addresses (RFC 4193).
_PRIVATE = tuple(
    ipaddress.ip_network(net)
    for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052's well-known prefix
# How a refusal says the rule can be lifted, for a deployment.
DEPLOYMENT_SWITCH = "ALLOW_PRIVATE_HOSTS=true, template parameter AllowPrivateHosts"


def resolve_tcp(host: str, port: int) -> Sequence[AddrInfo]:
    """``getaddrinfo`` for a TCP connection, as ``socket.create_connection`` asks it."""
    return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)


@dataclass(frozen=True)
class Address:
    """One resolved address to connect to: what ``socket.connect`` takes."""

    family: socket.AddressFamily
    sockaddr: tuple[Any, ...]  # (ip, port), or (ip, port, flowinfo, scope_id) for IPv6

    @property
    def ip(self) -> IPAddress:
        text = str(self.sockaddr[0])
        scope = self.sockaddr[3] if len(self.sockaddr) > 3 else 0
        # A link-local IPv6 address carries its interface: keep it, it is part of the address.
        if scope and "%" not in text:
            text = f"{text}%{scope}"
        return ipaddress.ip_address(text)


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses a secret's host or token URL may resolve to; ``allow_private``
    is the deployment's ALLOW_PRIVATE_HOSTS (``switch``: how a refusal says to set it)."""

    allow_private: bool = DEFAULT_ALLOW_PRIVATE_HOSTS
    resolve: Resolver = dataclasses.field(default=resolve_tcp, repr=False)
    switch: str = DEPLOYMENT_SWITCH

    def addresses(self, host: str, port: int, *, field: str) -> tuple[Address, ...]:
        """``host``'s addresses, each one allowed; connect to these, not to ``host``.

        A failed lookup raises ``socket.gaierror`` (an OSError) as a connect
        would; a refused address raises :class:`AddressRefused` naming
        ``field`` and the kind of address, and nothing is connected.
        """
        found = tuple(dict.fromkeys(Address(info[0], info[4]) for info in self.resolve(host, port)))
        if not found:
            raise ConnectError(f"{host} resolves to no address")
        if not self.allow_private:
            for ip in (address.ip for address in found):
                kind = non_public_kind(ip)
                if kind is not None:
                    raise AddressRefused(self._refusal(host, ip, kind, field), field)
        return found

    def check_plain_http(self, host: str, field: str) -> None:
        """A token request in clear text is only for a local test endpoint."""
        if not self.allow_private:
            raise AddressRefused(
                f"mailbox secret field '{field}': plain http:// to {host} is refused; "
                f"use https://, or allow private hosts ({self.switch})",
                field,
            )

    def _refusal(self, host: str, ip: IPAddress, kind: str, field: str) -> str:
        named = f"{host} is" if _same_address(host, ip) else f"{host} resolves to {ip},"
        article = "an" if kind[0] in "aeiou" else "a"
        return (
            f"mailbox secret field '{field}': {named} {article} {kind} address; refused "
            f"unless private hosts are allowed ({self.switch})"
        )


DEFAULT_ADDRESS_POLICY = AddressPolicy()


def connect_tcp(addresses: Sequence[Address], timeout: float | None) -> socket.socket:
    """A TCP connection to the first of ``addresses`` that accepts it, each tried within
    ``timeout``, as ``socket.create_connection`` does (its first failure is raised)."""
    failures: list[OSError] = []
    for address in addresses:
        sock = socket.socket(address.family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(address.sockaddr)
        except OSError as exc:
            sock.close()
            failures.append(exc)
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    if failures:
        raise failures[0]
    raise ConnectError("no address to connect to")


def non_public_kind(address: IPAddress) -> str | None:
    """What makes ``address`` unfit for a tenant's host ("loopback", "private", ...),
    or None when it is a public, globally reachable unicast address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            form, ipv4 = embedded
            kind = non_public_kind(ipv4)
            if kind is not None:
                return f"{kind} ({form})"
            if form in ("IPv4-mapped", "NAT64"):
                return None  # the IPv4 address it stands for is public
    checks: tuple[tuple[str, bool], ...] = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("shared (CGNAT)", address in _SHARED),
        ("private", any(address in net for net in _PRIVATE)),
        ("site-local", isinstance(address, ipaddress.IPv6Address) and address.is_site_local),
        ("reserved", address.is_reserved),
        ("special-purpose", not address.is_global),
    )
    return next((kind for kind, applies in checks if applies), None)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 one stands for or carries, and the form it takes."""
    if address.ipv4_mapped is not None:
        return "IPv4-mapped", address.ipv4_mapped
    if address in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return "6to4", address.sixtofour
    if address.teredo is not None:
        return "Teredo", address.teredo[1]  # the client's address
    return None


def _same_address(host: str, ip: IPAddress) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")) == ip
    except ValueError:
        return False
