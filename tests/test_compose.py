"""docker-compose.yml, Dockerfile and docker/mosquitto.conf agree with each other and with the real CLI."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
MOSQUITTO_CONF = ROOT / "docker" / "mosquitto.conf"
# ${VAR}, ${VAR:-default}, ${VAR-default}: compose interpolation, evaluated here with an empty environment
_VAR = re.compile(r"\$\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}")


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return services


def _defaults(text: str) -> str:
    return _VAR.sub(lambda m: m.group("default") or "", text).replace("$$", "$")


def _command(service: dict[str, Any]) -> list[str]:
    cmd = service["command"]
    return shlex.split(_defaults(cmd)) if isinstance(cmd, str) else [_defaults(str(c)) for c in cmd]


def _commands() -> dict[str, list[str]]:
    return {name: _command(s) for name, s in _services().items() if "command" in s}


def test_services_exist() -> None:
    assert {"mosquitto", "publisher", "receiver", "publisher-gpu"} <= set(_services())


def test_mosquitto_service() -> None:
    m = _services()["mosquitto"]
    assert m["image"].startswith("eclipse-mosquitto")
    assert any(str(p).split(":")[-1] == "1883" for p in m["ports"])
    # the config the image reads is ours
    mounts = {v.split(":")[0]: v.split(":")[1] for v in m["volumes"]}
    assert mounts["./docker/mosquitto.conf"] == "/mosquitto/config/mosquitto.conf"


@pytest.mark.parametrize("name", ["publisher", "receiver", "publisher-gpu", "publisher-cluster", "receiver-cluster"])
def test_build_context_has_dockerfile(name: str) -> None:
    build = _services()[name]["build"]
    if isinstance(build, str):  # the short form: just the context
        build = {"context": build}
    assert (COMPOSE.parent / build["context"] / build.get("dockerfile", "Dockerfile")).is_file()


def test_dockerfile_installs_cpu_torch_then_project() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    torch_at = text.index("pip install torch==2.13.0")
    assert "https://download.pytorch.org/whl/cpu" in text
    assert torch_at < text.index("pip install .")
    assert not re.search(r"^ENTRYPOINT", text, re.M)
    # the package directories the COPY lines name exist (setuptools maps them to livetok.*)
    for folder in re.findall(r"^COPY (\w+) \1$", text, re.M):
        assert (ROOT / folder).is_dir()


def test_gpu_service_only_in_gpu_profile() -> None:
    services = _services()
    gpu = services["publisher-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and d["count"] == 1 and "gpu" in d["capabilities"] for d in devices)
    assert _command(gpu)[-2:] == ["--device", "cuda"]
    # the default `docker compose up` starts no service that needs a GPU, nor the cluster
    for name, s in services.items():
        if name != "publisher-gpu":
            assert "deploy" not in s, name
            assert "profiles" not in s or s["profiles"] == ["cluster"], name


def test_commands_are_livetok_lines() -> None:
    commands = _commands()
    commands = {k: v for k, v in commands.items() if not k.startswith("nats")}  # the brokers' own commands
    assert set(commands) == {"publisher", "receiver", "publisher-gpu", "publisher-cluster", "receiver-cluster"}
    for name, argv in commands.items():
        assert argv[0] == "livetok", name
        if name.endswith("-cluster"):
            brokers = {argv[i + 1] for i, a in enumerate(argv) if a == "--broker"}
            assert brokers == {f"mqtt://nats{i}:1883" for i in (1, 2, 3)}, name
        else:
            assert "mqtt://mosquitto:1883" in argv, name
    assert commands["publisher"][:2] == ["livetok", "publish"]
    assert commands["receiver"][:2] == ["livetok", "receive"]
    assert commands["publisher"][commands["publisher"].index("--stream") + 1] == "cam0"
    rx = commands["receiver"]
    assert rx[rx.index("--out") + 1] == "/out/cam0.mp4"
    # a service waits for its publisher: no idle timeout, so `restart: on-failure` never loops on an empty stream
    for name in ("receiver", "receiver-cluster"):
        assert commands[name][commands[name].index("--timeout") + 1] == "0", name


def test_cluster_profile_matches_the_tested_cluster() -> None:
    services = _services()
    nodes = [services[f"nats{i}"] for i in (1, 2, 3)]
    for i, node in enumerate(nodes, 1):
        assert node["profiles"] == ["cluster"] and node["environment"]["NATS_NAME"] == f"n{i}"
        assert node["image"].startswith("nats:2.9")  # the version the tests run (Debian's nats-server)
    conf = (ROOT / "docker" / "nats.conf").read_text(encoding="utf-8")
    for setting in ("stream_replicas: 3", "consumer_replicas: 3", "listen: 0.0.0.0:1883", 'store_dir: "/data"',
                    "nats-route://nats1:6222, nats-route://nats2:6222, nats-route://nats3:6222"):
        assert setting in conf
    rx = _command(services["receiver-cluster"])
    assert rx[rx.index("--stream") + 1] == "+" and rx[rx.index("--workers") + 1] == "2"


@pytest.mark.parametrize("name", ["publisher", "receiver", "publisher-gpu", "publisher-cluster", "receiver-cluster"])
def test_commands_parse_with_the_real_cli(name: str) -> None:
    from livetok.cli import get_parser

    argv = _commands()[name]
    try:
        get_parser().parse_args(argv[1:])
    except SystemExit as e:
        pytest.fail(f"`{shlex.join(argv)}` is rejected by the livetok CLI (exit {e.code})")


def test_mosquitto_conf_listens_on_1883_with_persistence() -> None:
    lines = [ln.strip() for ln in MOSQUITTO_CONF.read_text(encoding="utf-8").splitlines()]
    settings = [ln.split() for ln in lines if ln and not ln.startswith("#")]
    # mosquitto reads `value # text` as part of the value: comments must be whole lines
    assert not any("#" in " ".join(s) for s in settings)
    assert ["listener", "1883"] in settings
    assert ["persistence", "true"] in settings
    location = [s[1] for s in settings if s[0] == "persistence_location"]
    assert location and location[0].startswith("/mosquitto/data")
    # the data folder is a volume, so the database outlives the container
    assert any(v.endswith(":/mosquitto/data") for v in _services()["mosquitto"]["volumes"])
