"""The docker-compose stack, Dockerfile and .dockerignore, checked without a Docker engine.

Debian's ``docker-compose`` (1.29) parses, interpolates and validates a compose file without an
engine: ``docker-compose config`` must accept ours, and every service's command must be one our
CLI really has (its ``--help`` form exits 0 through the real entry points, which also rejects
unknown options). The resolved configuration is read with the YAML parser of docker-compose's own
interpreter, since the project does not depend on PyYAML.

``docker-compose`` missing is a failure in CI (``.ci/run`` installs it and sets
``CIOGUARD_CI=1``) and a skip with the install command elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cioguard.broker.envelope import new_key

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SERVICES = {"redis", "postgres", "worker", "webhooks", "flower", "sandbox", "deadlines"}
CIOGUARD_SERVICES = {"worker", "webhooks", "flower", "sandbox", "deadlines"}
SECRET_VARS = (
    "CUSTOMERIO_SITE_ID", "CUSTOMERIO_TRACK_API_KEY", "CUSTOMERIO_WEBHOOK_SECRET",
    "CIOGUARD_HASH_KEY", "CIOGUARD_PAYLOAD_KEY", "SENTRY_DSN", "FLOWER_BASIC_AUTH",
)  # fmt: skip


def docker_compose() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        message = (
            "docker-compose is not installed: `apt-get install -y docker-compose` "
            "(Debian's 1.29 validates compose files without an engine; .ci/run installs it)"
        )
        if os.environ.get("CIOGUARD_CI") == "1":  # CI installed it: missing is a failure
            pytest.fail(message)
        pytest.skip(message)  # a developer machine without it still runs every other test
    return found


def compose(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [docker_compose(), "--project-directory", str(project), *args],
        cwd=project, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def make_project(directory: Path) -> Path:
    """A copy of the compose file and Dockerfile, with .env made from .env.example, filled in."""
    for name in ("docker-compose.yml", "Dockerfile"):
        shutil.copy(ROOT / name, directory / name)
    env = (ROOT / ".env.example").read_text()
    env = env.replace(
        "\nPOSTGRES_PASSWORD=\n", f"\nPOSTGRES_PASSWORD={secrets.token_urlsafe(18)}\n"
    )
    (directory / ".env").write_text(env)
    return directory


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path)


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``docker-compose --profile sandbox config``, parsed (once for the module)."""
    project = make_project(tmp_path_factory.mktemp("compose"))
    done = compose(project, "--profile", "sandbox", "config")
    assert done.returncode == 0, done.stderr
    interpreter = Path(docker_compose()).read_text().splitlines()[0].removeprefix("#!").split()
    to_json = "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"
    converted = subprocess.run(
        [*interpreter, "-c", to_json], input=done.stdout, capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    config: dict[str, Any] = json.loads(converted.stdout)
    return config


def valid_env() -> dict[str, str]:
    """What every cioguard entry point needs to import (no service is contacted by --help)."""
    return {
        **os.environ, "CIOGUARD_HASH_KEY": secrets.token_urlsafe(48),
        "CIOGUARD_PAYLOAD_KEY": new_key(), "CUSTOMERIO_SITE_ID": "site",
        "CUSTOMERIO_TRACK_API_KEY": "key", "CIOGUARD_BROKER_URL": "redis://127.0.0.1:1/0",
    }  # fmt: skip


# -- the file as a whole --------------------------------------------------------------------


def test_docker_compose_accepts_the_file_with_every_service(project: Path) -> None:
    done = compose(project, "config", "--quiet")
    assert done.returncode == 0, done.stderr
    listed = compose(project, "--profile", "sandbox", "config", "--services").stdout.split()
    assert set(listed) == SERVICES  # 1.29 lists profiled services too; see the sandbox test


def test_an_unset_postgres_password_stops_compose_with_its_name(project: Path) -> None:
    shutil.copy(ROOT / ".env.example", project / ".env")
    done = compose(project, "config", "--quiet")
    assert done.returncode != 0
    assert "set POSTGRES_PASSWORD in .env" in done.stderr


def test_env_file_is_ignored_by_git_and_docker_and_documents_every_variable() -> None:
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in (ROOT / ".dockerignore").read_text().splitlines()
    raw = (ROOT / "docker-compose.yml").read_text()
    example = (ROOT / ".env.example").read_text()
    for name in re.findall(r"\$\{([A-Z_]+)", raw):
        assert re.search(rf"^{name}=", example, re.M), f"{name} is not in .env.example"


def test_no_secret_is_written_into_the_compose_file() -> None:
    raw = (ROOT / "docker-compose.yml").read_text()
    for name in SECRET_VARS:  # a secret may only be passed on from .env, as ${NAME}
        for value in re.findall(rf"^\s*-?\s*{name}\s*[:=]\s*(.*)$", raw, re.M):
            assert value.strip() == f"${{{name}}}", name


# -- services ---------------------------------------------------------------------------------


def test_redis_persists_and_never_evicts(resolved: dict[str, Any]) -> None:
    redis = resolved["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert any(str(v).split(":")[1] == "/data" for v in redis["volumes"])


def test_worker_scales_and_serves_metrics(resolved: dict[str, Any]) -> None:
    worker = resolved["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert worker["environment"]["CIOGUARD_METRICS_PORT"] == "9100"
    assert worker["command"][:2] == ["cioguard", "worker"]


def test_cioguard_services_share_the_stack_and_take_secrets_from_env_file(
    resolved: dict[str, Any],
) -> None:
    for name in ("worker", "webhooks"):
        service = resolved["services"][name]
        env = service["environment"]
        assert env["CIOGUARD_BROKER_URL"] == "redis://redis:6379/0"
        assert env["CIOGUARD_AUDIT_URL"].startswith("postgresql+psycopg://cioguard:")
        assert env["CIOGUARD_AUDIT_URL"].endswith("@postgres:5432/cioguard")
        assert "CIOGUARD_HASH_KEY" in env  # from env_file: .env
    for name in CIOGUARD_SERVICES:
        assert resolved["services"][name]["image"] == "cioguard:local"


def test_flower_gets_the_broker_and_its_password_only(resolved: dict[str, Any]) -> None:
    assert set(resolved["services"]["flower"]["environment"]) == {
        "CIOGUARD_BROKER_URL", "FLOWER_BASIC_AUTH",
    }  # fmt: skip


def test_published_ports_are_on_loopback_only(resolved: dict[str, Any]) -> None:
    for name, service in resolved["services"].items():
        for port in service.get("ports", []):
            spec = port if isinstance(port, str) else f"{port['host_ip']}:{port['published']}"
            assert spec.startswith("127.0.0.1:"), (name, port)


def test_flower_runs_read_only_behind_auth_and_not_persistent(resolved: dict[str, Any]) -> None:
    from cioguard.ops.flower import flower_command

    command = resolved["services"]["flower"]["command"]
    assert command[:2] == ["cioguard", "flower"]  # cioguard's own options: --address, --port
    assert not any(arg.startswith("--persistent") for arg in command)
    assert all(arg.split("=")[0] in ("--address", "--port") for arg in command[2:])
    effective = flower_command(address="0.0.0.0", port=5555)
    assert "--read_only=True" in effective and "--persistent=False" in effective


def test_sandbox_is_a_profile_with_a_certificate_for_its_service_name(
    resolved: dict[str, Any],
) -> None:
    sandbox = resolved["services"]["sandbox"]
    assert sandbox["profiles"] == ["sandbox"]
    command = sandbox["command"]
    assert command[command.index("--host") + 1] == sandbox["hostname"] == "sandbox"


# -- every command is one the CLI really has --------------------------------------------------


def help_forms(command: list[str]) -> list[list[str]]:
    """The real entry points to run with ``--help`` for one compose command."""
    program, args = command[0], command[1:]
    if program == "cioguard":
        forms = [[str(BIN / "cioguard"), *args, "--help"]]
        if args[0] == "worker":  # pass-through options must be Celery's
            celery = [str(BIN / "celery"), "-A", "cioguard.worker", "worker"]
            forms.append([*celery, *args[1:], "--help"])
        return forms
    if program == "python":
        return [[sys.executable, *args, "--help"]]
    raise AssertionError(f"unknown program in compose: {program}")


@pytest.mark.parametrize("service", sorted(CIOGUARD_SERVICES))
def test_every_service_command_exists_in_the_cli(resolved: dict[str, Any], service: str) -> None:
    command = resolved["services"][service]["command"]
    for form in help_forms(command):
        done = subprocess.run(form, env=valid_env(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (form, done.stdout[-500:], done.stderr[-2000:])
        assert "Usage" in done.stdout or "usage" in done.stdout


def test_the_sandbox_command_parses_with_the_sandbox_parser(resolved: dict[str, Any]) -> None:
    from cioguard.sandbox.server import build_parser

    args = resolved["services"]["sandbox"]["command"][2:]
    parsed = build_parser().parse_args(args)
    assert (parsed.host, parsed.port, parsed.ca_file) == ("sandbox", 8443, "/sandbox-ca/ca.pem")


def test_flower_options_exist_in_flower(resolved: dict[str, Any]) -> None:
    from flower.options import options

    from cioguard.ops.flower import flower_command

    assert resolved["services"]["flower"]["command"][:2] == ["cioguard", "flower"]
    effective = flower_command(address="0.0.0.0", port=5555)
    assert effective[1:3] == ["-m", "celery"]
    for arg in effective[effective.index("flower") + 1 :]:
        assert arg.removeprefix("--").split("=")[0] in options, arg


def test_flower_starts_its_celery_command_with_the_broker_alone() -> None:
    from cioguard.ops.flower import flower_command

    form = [*flower_command(extra=["--help"])]
    env = {"PATH": os.environ["PATH"], "CIOGUARD_BROKER_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run(form, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Usage" in done.stdout


# -- the image ----------------------------------------------------------------------------------


def test_dockerfile_runs_the_worker_as_a_non_root_user_without_secrets() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert stages and all(s.startswith("python:3.11-slim") for s in stages)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.findall(r"^CMD (.+)$", text, re.M)[-1] == '["cioguard", "worker"]'
    settings = " ".join(re.findall(r"^(?:ENV|ARG)\s+(.+(?:\\\n.+)*)", text, re.M))
    for name in SECRET_VARS:
        assert name not in settings, name
    assert not re.search(r"^COPY\s+\.env", text, re.M)
