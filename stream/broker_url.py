"""MQTT broker addresses (`mqtt://[user[:pass]@]host[:port]`, `mqtts://...`) and livetok topic names.

Topics are `livetok/<stream>/{tokens,info,control,stats}` (DESIGN.md §4).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NotRequired, TypedDict
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    import aiomqtt

__all__ = [
    "DEFAULT_PORTS",
    "ENV_PASSWORD",
    "ENV_USERNAME",
    "KINDS",
    "PREFIX",
    "BrokerConfig",
    "Topics",
    "parse_broker_url",
    "stream_from_topic",
    "topics",
]

DEFAULT_PORTS: dict[str, int] = {"mqtt": 1883, "mqtts": 8883}
ENV_USERNAME = "LIVETOK_MQTT_USERNAME"
ENV_PASSWORD = "LIVETOK_MQTT_PASSWORD"
PREFIX = "livetok"
KINDS = ("tokens", "info", "control", "stats")
_MASK = "***"


# --- broker address ---------------------------------------------------------------------------


class ClientKwargs(TypedDict):
    """`aiomqtt.Client`'s keyword arguments for one broker (`BrokerConfig.client_kwargs`)."""

    hostname: str
    port: int
    username: str | None
    password: str | None
    keepalive: int
    tls_params: NotRequired[aiomqtt.TLSParameters]


@dataclass(frozen=True)
class BrokerConfig:
    """Where and how to connect to an MQTT broker; `repr`/`str` never show the password."""

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: str | None = None  # None with tls: the system's CA store
    certfile: str | None = None  # client certificate (mutual TLS)
    keyfile: str | None = None
    keepalive: int = 60

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("broker host is empty")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"broker port {self.port} is out of range 1-65535")
        if self.keepalive <= 0:
            raise ValueError(f"keepalive must be > 0 seconds, got {self.keepalive}")
        # MQTT 3.1.1 forbids a password flag without a user name: the broker would refuse the CONNECT
        if self.password is not None and not self.username:
            raise ValueError(f"a broker password needs a user name (URL user or ${ENV_USERNAME})")
        if self.keyfile is not None and self.certfile is None:
            raise ValueError("a client key file needs a client certificate file")
        if not self.tls and (self.ca_file or self.certfile):
            raise ValueError("CA/client certificate files need TLS: use an mqtts:// URL")

    def __repr__(self) -> str:
        pw = None if self.password is None else _MASK
        return (
            f"BrokerConfig(host={self.host!r}, port={self.port}, username={self.username!r}, password={pw!r}, "
            f"tls={self.tls}, ca_file={self.ca_file!r}, certfile={self.certfile!r}, keyfile={self.keyfile!r}, "
            f"keepalive={self.keepalive})"
        )

    def __str__(self) -> str:
        return self.url

    @property
    def url(self) -> str:
        """The address as a URL without the password (safe to log)."""
        host = f"[{self.host}]" if ":" in self.host else self.host  # IPv6 literal
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{host}:{self.port}"

    def client_kwargs(self) -> ClientKwargs:
        """Keyword arguments for `aiomqtt.Client(**kwargs)` (aiomqtt >= 2.3)."""
        kwargs: ClientKwargs = {
            "hostname": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "keepalive": self.keepalive,
        }
        if self.tls:
            import aiomqtt  # here, not at module import: parsing a URL needs no MQTT client

            kwargs["tls_params"] = aiomqtt.TLSParameters(
                ca_certs=self.ca_file, certfile=self.certfile, keyfile=self.keyfile
            )
        return kwargs


def parse_broker_url(
    url: str,
    ca_file: str | None = None,
    password_file: str | None = None,
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
    keepalive: int = 60,
) -> BrokerConfig:
    """Parse `mqtt://[user[:pass]@]host[:port]` (port 1883) or `mqtts://...` (port 8883, TLS).

    User and password are percent-decoded. Where the URL has none they come from
    `$LIVETOK_MQTT_USERNAME`, and from `password_file` (its first line) or else `$LIVETOK_MQTT_PASSWORD`;
    a password in both the URL and `password_file` is an error.

    Raises:
        ValueError: one line naming the problem (scheme, port, host, path, credentials, password file).
    """
    text = url.strip()
    if "://" not in text:
        raise ValueError(f"broker URL {url!r} has no scheme: use mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        allowed = ", ".join(f"{s}://" for s in DEFAULT_PORTS)
        raise ValueError(f"unsupported scheme {parts.scheme!r} in broker URL {_redact(url)!r}: use one of {allowed}")
    try:
        port = parts.port  # raises for a non-number or out of 0-65535
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"bad port in broker URL {_redact(url)!r}: need an integer 1-65535")
    host = parts.hostname  # lower-cased, IPv6 brackets removed
    if not host:
        raise ValueError(f"broker URL {_redact(url)!r} has no host: use {scheme}://HOST[:PORT]")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"broker URL {_redact(url)!r} has a path, query or fragment: only {scheme}://HOST[:PORT]")

    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    if password is not None and password_file is not None:
        raise ValueError("the broker password is given twice (in the URL and in the password file): give it once")
    if not username:
        username = os.environ.get(ENV_USERNAME) or None
    if password is None and password_file is not None:
        password = _read_password_file(password_file)
    if password is None:
        password = os.environ.get(ENV_PASSWORD) or None

    return BrokerConfig(
        host=host,
        port=port if port is not None else DEFAULT_PORTS[scheme],
        username=username,
        password=password,
        tls=scheme == "mqtts",
        ca_file=ca_file,
        certfile=certfile,
        keyfile=keyfile,
        keepalive=keepalive,
    )


def _read_password_file(path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise ValueError(f"cannot read the broker password file {path}: {reason}") from None
    # only line endings are stripped: spaces may be part of a password
    first = text.splitlines()[0] if text else ""
    if not first:
        raise ValueError(f"the broker password file {path} has an empty first line")
    return first


def _redact(url: str) -> str:
    """`url` with any password replaced, for error messages."""
    scheme, sep, rest = url.strip().partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url.strip()
    return f"{scheme}://{userinfo.split(':', 1)[0]}:{_MASK}@{hostpart}"


# --- topics -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Topics:
    """The topics of one stream; `Topics("+")` names every stream's topics, for subscribing only."""

    stream: str

    def __post_init__(self) -> None:
        _check_stream(self.stream, allow_wildcard=True)

    @property
    def wildcard(self) -> bool:
        """True for the subscribe-only `+` stream (publishing to it is an MQTT protocol error)."""
        return self.stream == "+"

    @property
    def tokens(self) -> str:
        return f"{PREFIX}/{self.stream}/tokens"

    @property
    def info(self) -> str:
        return f"{PREFIX}/{self.stream}/info"

    @property
    def control(self) -> str:
        return f"{PREFIX}/{self.stream}/control"

    @property
    def stats(self) -> str:
        return f"{PREFIX}/{self.stream}/stats"


def topics(stream: str) -> Topics:
    """The topics of `stream` (`+` for all streams, subscribe only); ValueError for a bad name."""
    return Topics(stream)


def stream_from_topic(topic: str) -> str:
    """The stream name in `livetok/<stream>/<kind>`; ValueError for any other topic."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != PREFIX or parts[2] not in KINDS:
        raise ValueError(f"topic {topic!r} is not {PREFIX}/<stream>/<kind> with kind one of {', '.join(KINDS)}")
    _check_stream(parts[1], allow_wildcard=False)
    return parts[1]


def _check_stream(name: str, *, allow_wildcard: bool) -> None:
    if name == "+" and allow_wildcard:
        return
    if not name:
        raise ValueError("stream name is empty")
    # '/' would shift the topic levels; '#', '+' are MQTT wildcards; NUL is forbidden in MQTT strings
    bad = sorted({c for c in name if c in "/#+\x00"})
    if bad:
        raise ValueError(f"stream name {name!r} contains {' '.join(repr(c) for c in bad)}: not allowed in stream names")
