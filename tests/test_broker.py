"""Broker URLs, topic names, and real round trips through mosquitto (QoS 1, retained, persistence across a restart)."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from livetok.bench.localbroker import Broker
from livetok.stream.broker_url import (
    ENV_PASSWORD,
    ENV_USERNAME,
    BrokerConfig,
    parse_broker_url,
    stream_from_topic,
    topics,
)

SECRET = "s3cr3t-pa55"
TIMEOUT_S = 5.0


@pytest.fixture(autouse=True)
def _no_credential_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # the developer's own credentials must not leak into the expectations
    monkeypatch.delenv(ENV_USERNAME, raising=False)
    monkeypatch.delenv(ENV_PASSWORD, raising=False)


# --- parse_broker_url -------------------------------------------------------------------------


def test_plain_url_defaults() -> None:
    cfg = parse_broker_url("mqtt://broker.local")
    assert cfg == BrokerConfig(host="broker.local", port=1883)
    assert (cfg.username, cfg.password, cfg.tls, cfg.ca_file, cfg.keepalive) == (None, None, False, None, 60)
    assert cfg.url == "mqtt://broker.local:1883"


def test_url_with_port_and_credentials() -> None:
    cfg = parse_broker_url(f"mqtt://alice:{SECRET}@10.0.0.5:18830")
    assert (cfg.host, cfg.port, cfg.username, cfg.password, cfg.tls) == ("10.0.0.5", 18830, "alice", SECRET, False)


def test_user_without_password() -> None:
    cfg = parse_broker_url("mqtt://bob@host:1884/")
    assert (cfg.host, cfg.port, cfg.username, cfg.password) == ("host", 1884, "bob", None)


def test_mqtts_defaults_to_8883_and_tls() -> None:
    cfg = parse_broker_url("MQTTS://Example.COM", ca_file="/etc/ssl/ca.pem")
    assert (cfg.host, cfg.port, cfg.tls, cfg.ca_file) == ("example.com", 8883, True, "/etc/ssl/ca.pem")
    assert parse_broker_url("mqtts://h:9999").port == 9999


def test_ipv6_literal() -> None:
    cfg = parse_broker_url("mqtt://[::1]:1999")
    assert (cfg.host, cfg.port, cfg.url) == ("::1", 1999, "mqtt://[::1]:1999")


def test_percent_decoding() -> None:
    cfg = parse_broker_url("mqtt://d%40ve:p%3Aa%2Fss%20w%40rd@host")
    assert (cfg.username, cfg.password) == ("d@ve", "p:a/ss w@rd")


def test_credentials_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_USERNAME, "envuser")
    monkeypatch.setenv(ENV_PASSWORD, SECRET)
    cfg = parse_broker_url("mqtt://host")
    assert (cfg.username, cfg.password) == ("envuser", SECRET)
    # the URL wins over the environment
    cfg = parse_broker_url("mqtt://urluser:urlpass@host")
    assert (cfg.username, cfg.password) == ("urluser", "urlpass")


def test_password_file_first_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pw = tmp_path / "pw"
    pw.write_text(f"{SECRET} \r\nsecond line\n", encoding="utf-8")
    monkeypatch.setenv(ENV_PASSWORD, "from-env")
    cfg = parse_broker_url("mqtt://carol@host", password_file=str(pw))
    # only the line ending is stripped; the file beats the environment
    assert (cfg.username, cfg.password) == ("carol", f"{SECRET} ")


def test_password_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot read the broker password file .*missing: No such file"):
        parse_broker_url("mqtt://u@host", password_file=str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="empty first line"):
        parse_broker_url("mqtt://u@host", password_file=str(empty))
    with pytest.raises(ValueError, match="given twice"):
        parse_broker_url("mqtt://u:p@host", password_file=str(empty))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://host:1883", r"unsupported scheme 'http'.*use one of mqtt://, mqtts://"),
        ("tcp://host", r"unsupported scheme 'tcp'"),
        ("localhost:1883", r"has no scheme: use mqtt://HOST\[:PORT\]"),
        ("mqtt://host:abc", r"bad port .*integer 1-65535"),
        ("mqtt://host:0", r"bad port"),
        ("mqtt://host:70000", r"bad port"),
        ("mqtt://", r"has no host"),
        ("mqtt://user@:1883", r"has no host"),
        ("mqtt://host/livetok/cam0", r"path, query or fragment"),
        ("mqtt://:pw@host", r"password needs a user name"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        parse_broker_url(url)
    assert "\n" not in str(err.value)


def test_tls_files_need_mqtts() -> None:
    with pytest.raises(ValueError, match="use an mqtts:// URL"):
        parse_broker_url("mqtt://host", ca_file="ca.pem")
    with pytest.raises(ValueError, match="client key file needs a client certificate"):
        parse_broker_url("mqtts://host", keyfile="k.pem")


def test_password_never_shown(tmp_path: Path) -> None:
    cfg = parse_broker_url(f"mqtts://alice:{SECRET}@host")
    for text in (repr(cfg), str(cfg), f"{cfg}", f"{cfg!r}", cfg.url, repr([cfg])):
        assert SECRET not in text
    assert "password='***'" in repr(cfg)
    assert str(cfg) == "mqtts://alice@host:8883"
    # nor in the error for a bad URL that carries one
    with pytest.raises(ValueError) as err:
        parse_broker_url(f"http://alice:{SECRET}@host")
    assert SECRET not in str(err.value)


def test_client_kwargs_match_aiomqtt() -> None:
    plain = parse_broker_url("mqtt://u:p@h:1000").client_kwargs()
    assert plain == {"hostname": "h", "port": 1000, "username": "u", "password": "p", "keepalive": 60}
    tls = parse_broker_url("mqtts://h", ca_file="ca.pem", certfile="c.pem", keyfile="k.pem").client_kwargs()
    params = tls.pop("tls_params")
    assert isinstance(params, aiomqtt.TLSParameters)
    assert (params.ca_certs, params.certfile, params.keyfile) == ("ca.pem", "c.pem", "k.pem")

    async def construct() -> None:
        # every key is a real aiomqtt.Client parameter (constructing connects nothing, but needs a loop)
        aiomqtt.Client(**plain)
        aiomqtt.Client(**tls, tls_params=aiomqtt.TLSParameters())

    asyncio.run(construct())


# --- topics -----------------------------------------------------------------------------------


def test_topics() -> None:
    t = topics("cam0")
    assert (t.tokens, t.info, t.control, t.stats) == (
        "livetok/cam0/tokens",
        "livetok/cam0/info",
        "livetok/cam0/control",
        "livetok/cam0/stats",
    )
    assert not t.wildcard
    w = topics("+")
    assert w.wildcard and w.tokens == "livetok/+/tokens"


@pytest.mark.parametrize("name", ["", "a/b", "#", "cam#", "cam+1", "++", "a\x00b"])
def test_bad_stream_names(name: str) -> None:
    with pytest.raises(ValueError, match="stream name"):
        topics(name)


@pytest.mark.parametrize("kind", ["tokens", "info", "control", "stats"])
def test_stream_from_topic_round_trip(kind: str) -> None:
    assert stream_from_topic(getattr(topics("front door"), kind)) == "front door"


@pytest.mark.parametrize("topic", ["livetok/cam0", "livetok/cam0/video", "other/cam0/tokens", "livetok/+/tokens"])
def test_stream_from_bad_topic(topic: str) -> None:
    with pytest.raises(ValueError):
        stream_from_topic(topic)


# --- through a real mosquitto -----------------------------------------------------------------


def _client(broker: Broker, **kwargs: Any) -> aiomqtt.Client:
    return aiomqtt.Client(**parse_broker_url(broker.url).client_kwargs(), **kwargs)


async def _next(client: aiomqtt.Client) -> aiomqtt.Message:
    return await asyncio.wait_for(anext(aiter(client.messages)), TIMEOUT_S)


@pytest.mark.broker
def test_qos1_round_trip(mosquitto: Broker) -> None:
    t = topics("cam0")
    payload = bytes(range(256)) * 16  # a 4 KiB binary packet

    async def main() -> aiomqtt.Message:
        async with _client(mosquitto) as sub, _client(mosquitto) as pub:
            await sub.subscribe(topics("+").tokens, qos=1)
            await pub.publish(t.tokens, payload, qos=1)
            return await _next(sub)

    msg = asyncio.run(main())
    assert (msg.topic.value, msg.payload, msg.qos) == (t.tokens, payload, 1)
    assert stream_from_topic(msg.topic.value) == "cam0"


@pytest.mark.broker
def test_retained_info_reaches_late_subscriber(mosquitto: Broker) -> None:
    t = topics("cam0")
    info = json.dumps({"model": "tiny", "fps": 30, "size": [192, 256]}).encode()

    async def main() -> aiomqtt.Message:
        async with _client(mosquitto) as pub:
            await pub.publish(t.info, info, qos=1, retain=True)
        # subscribes only after the publisher has gone
        async with _client(mosquitto) as late:
            await late.subscribe(t.info, qos=1)
            return await _next(late)

    msg = asyncio.run(main())
    assert (msg.topic.value, msg.payload, msg.retain) == (t.info, info, True)


@pytest.mark.broker
def test_persistent_session_survives_broker_restart(mosquitto: Broker) -> None:
    t = topics("cam0")
    ident = "livetok-test-receiver"

    async def subscribe_then_leave() -> None:
        async with _client(mosquitto, identifier=ident, clean_session=False) as rx:
            await rx.subscribe(t.tokens, qos=1)

    async def publish(payload: bytes) -> None:
        async with _client(mosquitto) as pub:
            await pub.publish(t.tokens, payload, qos=1)

    async def come_back() -> list[object]:
        # no subscribe call: the session, its subscription and its queue come from the broker
        async with _client(mosquitto, identifier=ident, clean_session=False) as rx:
            return [(await _next(rx)).payload, (await _next(rx)).payload]

    asyncio.run(subscribe_then_leave())
    asyncio.run(publish(b"before restart"))  # queued for the absent receiver
    mosquitto.stop()
    assert not mosquitto.running
    mosquitto.start()
    asyncio.run(publish(b"after restart"))  # routed by the subscription reloaded from disk
    assert asyncio.run(come_back()) == [b"before restart", b"after restart"]


@pytest.mark.broker
def test_link_publish_survives_a_timed_out_ack(mosquitto: Broker) -> None:
    """An ack that does not come in time (the connection still standing) must not leave the link
    believing it is disconnected: the retry goes out on the same connection and arrives."""
    from livetok.bench.lossy_relay import LossyRelay
    from livetok.stream.mqtt import MqttLink

    t = topics("cam0")

    async def main() -> tuple[list[bytes], int]:
        async with _client(mosquitto) as sub, LossyRelay(mosquitto.host, mosquitto.port, t.tokens, loss=0.0) as relay:
            await sub.subscribe(t.tokens, qos=1)
            async with MqttLink(parse_broker_url(f"mqtt://127.0.0.1:{relay.port}")) as link:
                await asyncio.wait_for(link.connected.wait(), TIMEOUT_S)
                relay.hold()  # the broker's PUBACK is held back: the first attempt times out
                loop = asyncio.get_running_loop()
                loop.call_later(0.8, relay.release)
                await asyncio.wait_for(link.publish(t.tokens, b"frame-0", timeout_s=0.5), TIMEOUT_S)
                await asyncio.wait_for(link.publish(t.tokens, b"frame-1", timeout_s=0.5), TIMEOUT_S)
                got = [bytes((await _next(sub)).payload) for _ in range(2)]
                # a duplicate of frame-0 (the retry) may follow; drain what is there
                try:
                    while True:
                        got.append(bytes((await asyncio.wait_for(anext(aiter(sub.messages)), 0.5)).payload))
                except TimeoutError:
                    pass
                return got, link.connects

    got, connects = asyncio.run(main())
    assert connects == 1, "the connection stood throughout: no reconnect"
    assert got[0] == b"frame-0" and b"frame-1" in got and set(got) == {b"frame-0", b"frame-1"}


@pytest.mark.broker
def test_link_leaves_no_unread_disconnect_error(mosquitto: Broker, caplog: pytest.LogCaptureFixture) -> None:
    """A connection lost while `on_connect` publishes ends aiomqtt's context early, which (2.5.1) leaves the
    disconnect's exception unread: asyncio would log "Future exception was never retrieved" with a traceback
    once the client is collected. The link reads it; the user sees only its one-line reconnect warning."""
    from livetok.bench.lossy_relay import LossyRelay
    from livetok.stream.mqtt import MqttLink

    t = topics("cam0")

    async def main() -> int:
        async with LossyRelay(mosquitto.host, mosquitto.port, t.tokens, loss=0.0) as relay:

            async def on_connect(client: aiomqtt.Client) -> None:
                if link.connects == 1:  # the first connection dies while its publish waits for the ack
                    relay.hold()
                    asyncio.get_running_loop().call_later(0.3, relay.cut)
                    try:
                        await client.publish(t.info, b"info", qos=1, timeout=1.0)
                    finally:
                        relay.release()

            link = MqttLink(parse_broker_url(relay.url), on_connect=on_connect, max_backoff_s=0.2)
            async with link:
                while link.connects < 2:
                    await asyncio.sleep(0.05)
                connects = link.connects
            gc.collect()  # where the unread exception would be logged
            await asyncio.sleep(0.1)
            return connects

    with caplog.at_level(logging.WARNING):
        connects = asyncio.run(asyncio.wait_for(main(), 20))
    assert connects == 2
    unread = [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()]
    assert unread == []
    assert any("unreachable" in r.getMessage() for r in caplog.records), "the lost connection is still reported"


@pytest.mark.broker
def test_link_stopped_while_connecting_leaves_no_socket(mosquitto: Broker, caplog: pytest.LogCaptureFixture) -> None:
    """A link closed while its CONNECT waits for the CONNACK closes the socket (aiomqtt 2.5.1 left it open, and its
    cancelled connect future made the socket's later close raise CancelledError inside the loop, logged with a
    traceback)."""
    from livetok.bench.lossy_relay import LossyRelay
    from livetok.stream.mqtt import MqttLink

    async def main() -> tuple[int, int]:
        async with LossyRelay(mosquitto.host, mosquitto.port, "unused", loss=0.0) as relay:
            relay.hold()  # the CONNACK never reaches the link
            link = MqttLink(parse_broker_url(relay.url))
            await link.start()
            while relay.connections == 0:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)  # the CONNECT is out, the CONNACK held
            held = relay.connections
            await link.close()
            for _ in range(100):  # the link's DISCONNECT, then its socket's close, pass through the relay
                if relay.connections == 0:
                    break
                await asyncio.sleep(0.02)
            left = relay.connections
            relay.cut()  # what a broker or a link would do to a socket still open
            await asyncio.sleep(0.2)
            gc.collect()
            await asyncio.sleep(0.1)
            return held, left

    with caplog.at_level(logging.WARNING):
        held, left = asyncio.run(asyncio.wait_for(main(), 20))
    assert (held, left) == (1, 0)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
