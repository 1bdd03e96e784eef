"""The README's set-up for a stranger's machine agrees with what the project really installs and runs
(issue 24 item 9): the CPU install line first, the same torch as the Dockerfile and CI, a light install,
a way to get mosquitto, and the Docker data step with the paths docker-compose.yml mounts."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def setup_commands() -> list[str]:
    """The commands of the first code block under "Set up and test", comments dropped."""
    section = README.split("## Set up and test", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.strip().splitlines()]


def test_the_cpu_install_comes_first_with_the_projects_torch() -> None:
    (docker_version,) = re.findall(r"torch==(\S+)", (ROOT / "Dockerfile").read_text())
    assert docker_version in (ROOT / ".ci" / "run").read_text()  # CI installs the same torch
    assert setup_commands() == [
        f"pip install torch=={docker_version} --index-url https://download.pytorch.org/whl/cpu",
        "pip install -e '.[dev]'",
        "python -m pytest",
    ]
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in (ROOT / "Dockerfile").read_text()


def test_light_install_broker_and_data_are_explained() -> None:
    section = README.split("## Set up and test", 1)[1].split("## Try it", 1)[0]
    assert "**A light install**" in section and "`pip install .`" in section
    assert "sudo apt install mosquitto" in section and "brew install mosquitto" in section
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    image = compose["services"]["mosquitto"]["image"]
    assert f"docker run --rm -p 1883:1883 {image}" in section
    assert "../shared/data" in section and "LIVETOK_DATA" in section
    assert "--ignore tests/test_quality.py --ignore tests/test_data.py" in section
    for test in ("test_quality.py", "test_data.py"):
        assert (ROOT / "tests" / test).is_file()


def test_the_docker_data_step_matches_the_compose_file() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    publisher = compose["services"]["publisher"]
    assert "./data:/data:ro" in publisher["volumes"]
    assert "--source ${LIVETOK_SOURCE:-/data/clip.mp4}" in publisher["command"]
    assert "./out:/out" in compose["services"]["receiver"]["volumes"]
    # the step is a command in one of the README's code blocks, not only a comment in the compose file
    blocks = [b for b in re.findall(r"```bash\n(.*?)```", README, re.S) if "docker compose up --build" in b]
    lines = [line.strip().split("#", 1)[0].strip() for b in blocks for line in b.splitlines()]
    assert "mkdir -p data out && cp stream/assets/demo.mp4 data/clip.mp4" in lines
    assert (ROOT / "stream" / "assets" / "demo.mp4").is_file()
