"""A proxy's registered endpoint (docs/PROTOCOL.md §2): ``"CLIENTS_HOST:PORT WORKERS_HOST:PORT"``.

Clients first, one space. A host is a name, an IPv4 address or a bracketed IPv6 address
(``[::1]:8443``). :func:`parse` is the one reader and :meth:`ProxyEndpoint.format` the one writer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LENGTH = 255
_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)$")
LINK_PATH = "/v1/link"


class EndpointError(ValueError):
    """The text is not a proxy endpoint."""


def _hostport(part: str, which: str) -> tuple[str, int]:
    host, sep, port = part.rpartition(":")
    if not sep or not host or not port.isdigit() or not _HOST.match(host):
        raise EndpointError(f"the {which} address {part!r} is not HOST:PORT")
    p = int(port)
    if not 0 < p < 65536:
        raise EndpointError(f"the {which} port {p} is not between 1 and 65535")
    return host, p


@dataclass(frozen=True)
class ProxyEndpoint:
    clients_host: str
    clients_port: int
    workers_host: str
    workers_port: int

    def format(self) -> str:
        return f"{self.clients_host}:{self.clients_port} {self.workers_host}:{self.workers_port}"

    __str__ = format

    @property
    def clients_url(self) -> str:
        """Where clients (gateways) connect: HTTPS with RA-TLS."""
        return f"https://{self.clients_host}:{self.clients_port}"

    @property
    def workers_url(self) -> str:
        """Where workers dial: the link's WebSocket."""
        return f"wss://{self.workers_host}:{self.workers_port}{LINK_PATH}"

    @staticmethod
    def _bare(host: str) -> str:
        return host[1:-1] if host.startswith("[") else host

    @property
    def workers_address(self) -> tuple[str, int]:
        """(host, port) to connect to, IPv6 brackets removed."""
        return self._bare(self.workers_host), self.workers_port

    @property
    def clients_address(self) -> tuple[str, int]:
        return self._bare(self.clients_host), self.clients_port


def parse(text: str) -> ProxyEndpoint:
    """Read ``"CLIENTS_HOST:PORT WORKERS_HOST:PORT"``; raises :class:`EndpointError`."""
    if not isinstance(text, str):
        raise EndpointError("a proxy endpoint is text")
    if len(text.encode()) > MAX_LENGTH:
        raise EndpointError(f"a proxy endpoint is at most {MAX_LENGTH} bytes")
    parts = text.split(" ")
    if len(parts) != 2:
        raise EndpointError(f"{text!r} is not 'CLIENTS_HOST:PORT WORKERS_HOST:PORT' (two addresses, one space)")
    ch, cp = _hostport(parts[0], "clients")
    wh, wp = _hostport(parts[1], "workers")
    return ProxyEndpoint(ch, cp, wh, wp)


def format_endpoint(clients_host: str, clients_port: int, workers_host: str, workers_port: int) -> str:
    """The registered text for these two listeners (validated by parsing it back)."""
    def h(x: str) -> str:
        return f"[{x}]" if ":" in x and not x.startswith("[") else x
    text = f"{h(clients_host)}:{clients_port} {h(workers_host)}:{workers_port}"
    parse(text)
    return text
