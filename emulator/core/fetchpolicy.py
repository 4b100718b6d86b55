"""Which addresses an input fetch may reach: the guard against server-side request forgery.

An ``image_url`` (or a redirect from one) that names a loopback, private, link-local (the
cloud metadata address 169.254.169.254 and fd00:ec2::254 among them), shared (100.64/10),
unspecified, reserved or multicast address is refused, unless ``Settings.allow_fetch`` allows
it. By default the loopback address the emulator itself listens on is allowed (any port), so
a test suite serving its own images on 127.0.0.1 keeps working when the emulator serves on
127.0.0.1 (the default); the emulator's own port there is never fetched over HTTP: its
samples and files are read in-process (``emulator.core.urls.OwnUrls.resolve``) and everything
else on it (the ``/_emulator`` control plane) is refused.

How the address actually connected to is checked (DNS rebinding): :meth:`FetchPolicy.pin`
resolves the host name itself, checks every address it gets, and the fetch then connects to
the checked IP literal (``Host`` header and TLS SNI keep the original name, so virtual hosts
and certificate checks work as before; see :func:`emulator.core.inputs.fetch_url`). Nothing
resolves the name a second time, so a name that answers a public address to the check and a
private one to the connect cannot slip through. IPv4-mapped (``::ffff:127.0.0.1``), 6to4 and
NAT64 (``64:ff9b::/96``) IPv6 addresses are judged by the IPv4 address they carry.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import httpx

from emulator.errors import InputImageError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Resolves ``(host, port)`` to the addresses a connection could go to (blocking work off the
#: event loop). Tests replace it to simulate DNS answers.
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

#: ``--allow-fetch any``: no address check at all.
ALLOW_ANY = "any"

#: :attr:`InputImageError.code` of a refused fetch (a kind of failed fetch for the adapters).
FETCH_FAILED = "fetch_failed"

_SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, by the system resolver (``getaddrinfo``, run off
    the event loop by asyncio). An IP literal gives itself without a look-up.

    Raises:
        OSError: (``socket.gaierror``) the name does not resolve.
    """
    literal = parse_ip(host)
    if literal is not None:
        return [literal]
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        ip = parse_ip(str(sockaddr[0]))
        if ip is not None and ip not in out:
            out.append(ip)
    return out


def parse_ip(text: str) -> IPAddress | None:
    """``text`` as an IP address (brackets and an IPv6 zone id allowed), else ``None``."""
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64), else ``None``."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def blocked_kind(ip: IPAddress) -> str | None:
    """Why ``ip`` is refused by default (``"loopback"``, ``"private"``, ...), or ``None`` for
    an ordinary public address."""
    inner = embedded_ipv4(ip)
    if inner is not None:
        kind = blocked_kind(inner)
        return None if kind is None else f"{kind} (as {ip})"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return "shared (carrier-grade NAT)"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    if ip.is_reserved or not ip.is_global:
        return "reserved"
    return None


@dataclass(frozen=True)
class Pinned:
    """A checked destination: connect to ``ip`` (never to ``host`` again).

    Attributes:
        host: the host name of the URL (lower case), for the ``Host`` header and TLS SNI.
        ip: the address that passed the check.
        port: the TCP port.
    """

    host: str
    ip: IPAddress
    port: int


class FetchPolicy:
    """The address check for input fetches.

    Args:
        allow: ``--allow-fetch`` entries: CIDRs or IP addresses (``10.0.0.0/8``,
            ``192.168.1.20``), host names (``images.internal``: whatever it resolves to is
            allowed), or ``"any"`` (the check is off).
        own_host: the address or name the emulator listens on (``Settings.host``); when it is
            loopback, that address (every loopback address for ``localhost``) is allowed.
        own_port: the emulator's port; the emulator's own addresses on it are always
            refused (its samples and files are read in-process, never over HTTP).
        resolver: name resolution (default :func:`system_resolver`).

    Raises:
        ValueError: an ``allow`` entry that is neither ``any``, an address, a CIDR nor a
            host name.
    """

    def __init__(self, allow: Iterable[str] = (), *, own_host: str | None = None,
                 own_port: int | None = None, resolver: Resolver | None = None) -> None:
        self.allow_any = False
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for entry in allow:
            text = entry.strip().lower()
            if text == ALLOW_ANY:
                self.allow_any = True
            elif text:
                network = _network(text)
                if network is not None:
                    networks.append(network)
                elif _is_host_name(text):
                    hosts.add(text.rstrip("."))
                else:
                    raise ValueError(f"--allow-fetch {entry!r}: expected a CIDR, an IP "
                                     "address, a host name or 'any'")
        own = (own_host or "").strip().lower()
        own_ip = parse_ip(own)
        loopback: list[IPAddress] = []
        if own in _LOOPBACK_NAMES:
            loopback = [ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1")]
        elif own_ip is not None and own_ip.is_loopback:
            loopback = [own_ip]
        networks.extend(ipaddress.ip_network(ip) for ip in loopback)
        #: Where the emulator itself answers (on ``own_port``): never fetched over HTTP.
        self.own: list[IPAddress] = list(loopback)
        if own_ip is not None and own_ip.is_unspecified:
            self.own += [ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1"),
                         own_ip]
        elif own_ip is not None and not own_ip.is_loopback:
            self.own.append(own_ip)
        self.own_port = own_port
        self.networks: tuple[IPNetwork, ...] = tuple(networks)
        self.hosts = frozenset(hosts)
        self.resolver: Resolver = resolver or system_resolver

    def refusal(self, host: str, ip: IPAddress, port: int) -> str | None:
        """Why a connection to ``ip:port`` (for the URL host ``host``) is refused, or
        ``None`` when it is allowed."""
        if (self.own_port is not None and port == self.own_port
                and (embedded_ipv4(ip) or ip) in self.own):
            return (f"{_hostport(ip, port)} is the emulator itself: only its samples and "
                    "files can be an input (read in-process), never its other URLs")
        if self.allow_any or host.lower().rstrip(".") in self.hosts:
            return None
        if any(ip in net for net in self.networks if net.version == ip.version):
            return None
        inner = embedded_ipv4(ip)
        if inner is not None and any(inner in net for net in self.networks
                                     if net.version == 4):
            return None
        kind = blocked_kind(ip)
        if kind is None:
            return None
        return (f"the address {ip} is {kind}, where the emulator never connects "
                "(serve --allow-fetch CIDR_OR_HOST allows it)")

    async def pin(self, host: str, port: int, *, url: str,
                  what: str = "fetching the input image") -> Pinned:
        """Resolve ``host`` and pick an allowed address to connect to.

        Every resolved address is checked; the first allowed one is used. ``url`` and
        ``what`` (the action, ``"delivering the webhook"``) are for the messages only.

        Raises:
            InputImageError: (code ``fetch_failed``) the name does not resolve, or every
                address it resolves to is refused; the message names the refused address.
        """
        name = host.lower().strip("[]").rstrip(".")
        try:
            addresses = await self.resolver(name, port)
        except OSError as exc:
            raise InputImageError(
                f"{what} failed: {url}: the host {name!r} does not resolve ({exc})",
                code=FETCH_FAILED) from None
        first_refusal = None
        for ip in addresses:
            reason = self.refusal(name, ip, port)
            if reason is None:
                return Pinned(name, ip, port)
            first_refusal = first_refusal or reason
        if first_refusal is None:
            raise InputImageError(
                f"{what} failed: {url}: the host {name!r} resolves to no address",
                code=FETCH_FAILED)
        raise InputImageError(f"{what} was refused: {url}: {first_refusal}", code=FETCH_FAILED)

    async def request(self, client: httpx.AsyncClient, method: str, url: httpx.URL, *,
                      short: str, what: str = "fetching the input image",
                      headers: dict[str, str] | None = None, content: bytes | None = None,
                      timeout: float) -> httpx.Request:
        """A request for ``url`` that connects to the address this policy checked (one
        :meth:`pin`), with the original ``Host`` header and TLS server name (httpx's
        ``sni_hostname`` extension), so nothing resolves the name a second time. Used for
        every outgoing call of the emulator: input fetches and webhook deliveries. ``client``
        must not use a proxy (``trust_env=False`` or an explicit transport).

        Raises:
            InputImageError: as :meth:`pin`.
        """
        host = (url.raw_host or b"").decode("ascii")
        port = url.port or (443 if url.scheme == "https" else 80)
        pinned = await self.pin(host, port, url=short, what=what)
        return client.build_request(
            method, url.copy_with(host=str(pinned.ip)),
            headers={**(headers or {}), "Host": url.netloc.decode("ascii")},
            content=content, extensions={"sni_hostname": host}, timeout=timeout,
        )


def check_allow_entries(entries: Iterable[str]) -> None:
    """Validate ``--allow-fetch`` entries (``Settings`` calls it at start-up).

    Raises:
        ValueError: naming the first entry that is not ``any``, an address, a CIDR or a
            host name.
    """
    FetchPolicy(entries)


def _network(text: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(text.strip("[]"), strict=False)
    except ValueError:
        return None


def _is_host_name(text: str) -> bool:
    labels = text.rstrip(".").split(".")
    return bool(text) and len(text) <= 253 and all(
        0 < len(label) <= 63 and label.replace("-", "").replace("_", "").isalnum()
        and label.isascii() for label in labels)


def _hostport(ip: IPAddress, port: int) -> str:
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
