"""Static checks of the deployment files (no container engine runs in CI)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from typer.main import get_command

from cli.main import app as cli_app
from core import search_attributes
from core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_images_are_pinned() -> None:
    for name, service in compose()["services"].items():
        image = service.get("image")
        if image is None:
            assert "build" in service, name
            continue
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), f"{name}: {image} is not pinned to a tag"
        assert not image.endswith(":latest"), name


def test_compose_env_vars_are_settings_the_app_reads() -> None:
    known = {f"AEGIS_{name.upper()}" for name in Settings.model_fields}
    for name, service in compose()["services"].items():
        for variable in service.get("environment", {}):
            if variable.startswith("AEGIS_"):
                assert variable in known, f"{name}: {variable} is not a setting"


def test_compose_commands_exist() -> None:
    commands = set(get_command(cli_app).commands)  # type: ignore[attr-defined]
    for name, service in compose()["services"].items():
        command = service.get("command")
        if command and command[0] == "aegis":
            assert command[1] in commands, f"{name}: aegis {command[1]} does not exist"


def test_compose_registers_every_search_attribute() -> None:
    command = compose()["services"]["temporal"]["command"]
    registered = {c.split("=", 1)[1].split("=")[0] for c in command if c.startswith("--search-attribute=")}
    assert registered == {key.name for key in search_attributes.ALL}


def test_compose_worker_stops_after_its_graceful_shutdown() -> None:
    worker = compose()["services"]["worker"]
    grace = int(worker["stop_grace_period"].rstrip("s"))
    assert grace > float(worker["environment"]["AEGIS_WORKER_GRACEFUL_SHUTDOWN_SECONDS"])


def test_env_example_lists_what_compose_requires() -> None:
    required = set(re.findall(r"\$\{(\w+):\?", (ROOT / "docker-compose.yml").read_text()))
    example = {
        line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines() if "=" in line
    }
    assert required <= example


def test_dockerfile_runs_as_non_root_on_a_pinned_base() -> None:
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.M)
    for base in re.findall(r"^FROM (\S+)", dockerfile, re.M):
        assert re.fullmatch(r"[\w./-]+:\d[\w.-]*", base), base


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [
        f"AEGIS_{name.upper()}" for name in Settings.model_fields if f"`AEGIS_{name.upper()}`" not in readme
    ]
    assert missing == []
