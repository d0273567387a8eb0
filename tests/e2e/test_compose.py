"""docker-compose.yml, checked without Docker: every command refers to a module, task, queue,
command or setting that exists in the project."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import yaml

from billing.config import Settings
from tests.support.processes import BIN
from workers.celery_app import QUEUES, app, beat_schedule

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES = COMPOSE["services"]


def _setting_names() -> set[str]:
    names = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        names.update(str(choice).upper() for choice in getattr(alias, "choices", []))
    return names


def test_the_stack_has_every_service_the_readme_promises() -> None:
    assert {"postgres", "redis", "migrate", "worker", "beat", "flower", "mailpit", "emulator"} <= (
        set(SERVICES)
    )
    assert SERVICES["beat"]["deploy"]["replicas"] == 1
    assert SERVICES["emulator"]["profiles"] == ["emulator"]
    redis_command = " ".join(SERVICES["redis"]["command"])
    assert "--appendonly yes" in redis_command
    assert "--maxmemory-policy noeviction" in redis_command


def test_celery_commands_name_the_app_and_queues_that_exist() -> None:
    for name in ("worker", "beat"):
        command = SERVICES[name]["command"]
        assert command[:3] == ["celery", "-A", "workers.celery_app"]
        assert importlib.util.find_spec("workers.celery_app") is not None
        if "-Q" in command:
            queues = command[command.index("-Q") + 1].split(",")
            assert set(queues) == set(QUEUES)
    app.loader.import_default_modules()  # what a worker does at start: the `include` list
    registered = set(app.tasks)
    for route in app.conf.task_routes:
        assert route in registered, route
    assert {entry["task"] for entry in beat_schedule(Settings(_env_file=None)).values()} <= (
        registered
    )


def test_billing_and_alembic_commands_exist() -> None:
    assert SERVICES["migrate"]["command"] == ["alembic", "upgrade", "head"]
    assert (ROOT / "alembic.ini").exists()
    emulator = SERVICES["emulator"]["command"]
    assert emulator[0] == "billing"
    shown = subprocess.run(
        [str(BIN / "billing"), *emulator[1:2], "--help"], capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    for option in (part for part in emulator[2:] if part.startswith("--")):
        assert option in shown.stdout, option


def test_the_environment_sets_only_real_settings_and_mail_goes_to_mailpit() -> None:
    environment = COMPOSE["x-billing"]["environment"]
    assert set(environment) <= _setting_names()
    assert environment["BILLING_EMAIL_BACKEND"] == "smtp"
    assert environment["BILLING_SMTP_URL"] == "smtp://mailpit:1025"
    assert "1025:1025" in SERVICES["mailpit"]["ports"]
    # Compose fills ${NAME:-default} from the host's environment; here, with the default.
    filled = {
        key.lower(): re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))
        for key, value in environment.items()
    }
    settings = Settings(_env_file=None, **filled)
    assert settings.broker_url == "redis://redis:6379/0"


DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _instructions(name: str) -> list[str]:
    """The arguments of every Dockerfile instruction of that name, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    return [
        line.split(None, 1)[1].strip()
        for line in joined.splitlines()
        if line.split(None, 1)[:1] == [name]
    ]


def test_the_image_runs_unprivileged_and_owns_its_statements_folder() -> None:
    assert _instructions("USER")[-1] == "billing"
    setup = " ".join(_instructions("RUN"))
    assert re.search(r"groupadd [^&]*--gid 10001 billing", setup)
    assert re.search(r"useradd [^&]*--uid 10001 --gid billing", setup)
    output_dir = COMPOSE["x-billing"]["environment"]["BILLING_OUTPUT_DIR"]
    assert f"statements:{output_dir}" in COMPOSE["x-billing"]["volumes"]
    assert f"mkdir -p {output_dir}" in setup
    assert f"chown billing:billing {output_dir}" in setup
    assert f"BILLING_OUTPUT_DIR={output_dir}" in _instructions("ENV")
    # how to mount a host folder instead, said the same way in the README and the compose file
    header = _compose_header()
    for text in (README, header):
        assert "uid 10001" in text
        assert "chown 10001:10001 FOLDER" in text


def _compose_header() -> str:
    lines = (ROOT / "docker-compose.yml").read_text(encoding="utf-8").splitlines()
    comments = [
        line for line in lines[: lines.index("x-billing: &billing")] if line.startswith("#")
    ]
    return "\n".join(line[2:] if line.startswith("# ") else line[1:] for line in comments)


def test_the_compose_header_runs_the_stack_as_the_readme_says() -> None:
    section = README.split("## Running the full stack", 1)[1]
    commands = section.split("```sh\n", 1)[1].split("\n```", 1)[0]
    header = _compose_header()
    assert commands in "\n".join(line.removeprefix("  ") for line in header.splitlines())
    assert "MKA1_BASE_URL=http://emulator:8765" in commands  # the workers' way to the emulator
    emulator = SERVICES["emulator"]["command"]
    assert emulator[emulator.index("--port") + 1] == "8765"
