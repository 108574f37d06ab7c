"""Which addresses ICE may use: the server's host candidates, and the peers it talks to.

aioice offers every interface's address except loopback as host candidates. ``use_host_addresses``
makes it offer exactly the configured ones instead. When every one of them is loopback (the
default: a server for browsers on its own machine), the server is loopback-only both ways:

- the offer's candidates that are not loopback are dropped (``keep_candidates``): nothing else can
  reach a loopback socket, and resolving a ``.local`` mDNS name would cost a multicast query;
- connectivity checks from a source that is not loopback are ignored. A browser sends checks
  from each of its sockets to our 127.0.0.1 candidate, including the one bound to its LAN
  address; answering it would make a peer-reflexive pair through that address.

Both are process-wide (aioice has no per-connection seam for them): one server per process.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

import aioice.ice


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # a host name, e.g. an mDNS ``.local`` candidate
        return False


def loopback_only(host_addresses: Sequence[str]) -> bool:
    return bool(host_addresses) and all(is_loopback(a) for a in host_addresses)


def keep_candidates(sdp: str, host_addresses: Sequence[str]) -> str:
    """``sdp`` without its non-loopback ``a=candidate`` lines when the server is loopback-only
    (``host_addresses`` all loopback); as is otherwise."""
    if not loopback_only(host_addresses):
        return sdp
    lines = sdp.splitlines(keepends=True)
    return "".join(line for line in lines if not line.startswith("a=candidate:") or _loopback_candidate(line))


def _loopback_candidate(line: str) -> bool:
    fields = line.split()  # a=candidate:FOUNDATION COMPONENT TRANSPORT PRIORITY ADDRESS PORT typ ...
    return len(fields) > 5 and is_loopback(fields[4])


class _HostAddresses:
    """The process's choice, read by the two aioice hooks below."""

    addresses: tuple[str, ...] = ()
    loopback_only = False


_original_host_addresses = aioice.ice.get_host_addresses
_original_request_received = aioice.ice.Connection.request_received


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    chosen = _HostAddresses.addresses
    if not chosen:
        return _original_host_addresses(use_ipv4, use_ipv6)
    return [a for a in chosen if (use_ipv4 if ipaddress.ip_address(a).version == 4 else use_ipv6)]


def _request_received(self: aioice.ice.Connection, message: Any, addr: tuple[str, int], protocol: Any) -> None:
    if _HostAddresses.loopback_only and not is_loopback(addr[0]):
        return  # a loopback-only server talks to loopback peers only
    _original_request_received(self, message, addr, protocol)


def use_host_addresses(addresses: Sequence[str]) -> None:
    """Offer exactly ``addresses`` as host candidates (empty: aioice's default, every interface but
    loopback); all loopback makes the process loopback-only. Process-wide."""
    for address in addresses:
        ipaddress.ip_address(address)  # ValueError for a host name
    _HostAddresses.addresses = tuple(addresses)
    _HostAddresses.loopback_only = loopback_only(addresses)
    aioice.ice.get_host_addresses = _host_addresses
    aioice.ice.Connection.request_received = _request_received  # type: ignore[method-assign]
