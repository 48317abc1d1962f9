"""``EgressPolicy`` and the address classification behind it.

The forbidden ranges are listed explicitly (``ipaddress``' ``is_private``/``is_global`` flags
disagree with this list for several ranges and have changed between Python releases).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_FORBIDDEN_SPEC: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "'this network'"),
    ("10.0.0.0/8", "private network"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local, cloud metadata"),
    ("172.16.0.0/12", "private network"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.168.0.0/16", "private network"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "broadcast"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", "IPv4-mapped"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("64:ff9b::/96", "NAT64"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/32", "Teredo"),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4"),
    ("fc00::/7", "unique-local, cloud metadata"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
)

#: Every forbidden network with a short label, checked in this order.
FORBIDDEN_NETWORKS: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(net), label) for net, label in _FORBIDDEN_SPEC
)

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_NAT64_WKP = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")


@dataclass(frozen=True)
class EgressPolicy:
    """What user-supplied URLs may reach. Build once from settings; immutable.

    ``allow_hosts`` and ``allow_networks`` are the operator's allowlist for trusted internal
    destinations: a host named in ``allow_hosts`` may resolve anywhere, and an address inside one
    of ``allow_networks`` is allowed although it is in a forbidden range. Scheme, port and userinfo
    rules apply to them all the same. ``allow_nat64`` (for IPv6-only hosts behind DNS64) judges an
    address in ``64:ff9b::/96`` by the IPv4 address it embeds instead of refusing it outright.
    """

    allow_http: bool = False
    allowed_ports: frozenset[int] = frozenset({80, 443})
    allow_hosts: frozenset[str] = frozenset()
    allow_networks: tuple[str, ...] = ()
    max_bytes: int = 20 * 1024 * 1024
    connect_timeout: float = 5.0
    total_timeout: float = 30.0
    allow_nat64: bool = False
    _networks: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ports = frozenset(int(p) for p in self.allowed_ports)
        if not ports or any(not 0 < p < 65536 for p in ports):
            raise ValueError("allowed_ports must be a non-empty set of ports in 1..65535")
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in self.allow_networks:
            try:
                networks.append(ipaddress.ip_network(str(entry).strip(), strict=False))
            except ValueError as exc:
                raise ValueError(f"allow_networks: {entry!r} is not a CIDR network") from exc
        for name in self.allow_hosts:
            host = normalize_host(str(name))
            if not host:
                raise ValueError("allow_hosts: empty host name")
            try:  # an IP literal in allow_hosts means that single address
                networks.append(ipaddress.ip_network(host))
            except ValueError:
                hosts.add(host)
        if self.max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if self.connect_timeout <= 0 or self.total_timeout <= 0:
            raise ValueError("connect_timeout and total_timeout must be positive")
        object.__setattr__(self, "allowed_ports", ports)
        object.__setattr__(self, "allow_hosts", frozenset(hosts))
        object.__setattr__(self, "allow_networks", tuple(str(n) for n in networks))
        object.__setattr__(self, "_networks", tuple(networks))

    def host_allowed(self, host: str) -> bool:
        """Whether ``host`` (a name) is on the operator allowlist."""
        return normalize_host(host) in self.allow_hosts

    def address_refusal(self, address: IPAddress) -> str | None:
        """``None`` if ``address`` may be contacted, else why not: ``"in 10.0.0.0/8 (...)"``."""
        if self._in_allowlist(address):
            return None
        if self.allow_nat64 and address.version == 6 and address in _NAT64_WKP:
            assert isinstance(address, ipaddress.IPv6Address)
            why = self.address_refusal(_last32(address))
            return None if why is None else f"NAT64 for {_last32(address)}, {why}"
        for network, label in FORBIDDEN_NETWORKS:
            if address.version == network.version and address in network:
                embedded = embedded_ipv4(address)
                extra = f", embeds IPv4 {embedded}" if embedded is not None else ""
                return f"in {network} ({label}{extra})"
        return None

    def _in_allowlist(self, address: IPAddress) -> bool:
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)  # same destination on a dual-stack socket
        return any(c.version == n.version and c in n for c in candidates for n in self._networks)


def normalize_host(host: str) -> str:
    """Lower-case, without the trailing dot of a fully-qualified name."""
    return host.strip().lower().rstrip(".")


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address carried by an IPv4-mapped, NAT64, 6to4 or Teredo address, if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64_WKP or address in _NAT64_LOCAL:
        return _last32(address)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def parse_address(text: str) -> IPAddress:
    """Parse an IP address string (IPv6 may carry a ``%zone``); ``ValueError`` if it is not one."""
    return ipaddress.ip_address(text.strip())


def forbidden_networks() -> Iterable[IPNetwork]:
    """The forbidden networks, for documentation and tests."""
    return (network for network, _ in FORBIDDEN_NETWORKS)


def _last32(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
