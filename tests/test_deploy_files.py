"""Static checks of the deployment files: docker-compose.yml, .env.example,
infra/ (Dockerfile, Temporal scripts and dynamic config, Kubernetes manifests,
Helm values) and the README's Production section. No container engine or
cluster runs in CI, so these read the files and check them against the
Compose Specification, the application's settings and CLI, and each other."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from temporalio.common import SearchAttributeIndexedValueType, SearchAttributeKey
from typer.main import get_command

from api.routes import health
from cli.main import app as cli_app
from core import search_attributes
from core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
TEMPORAL_DIR = INFRA / "temporal"
SETUP_NAMESPACE = TEMPORAL_DIR / "setup-namespace.sh"
SETUP_SCHEMA = TEMPORAL_DIR / "setup-schema.sh"
COMPOSE_SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"

SETTINGS = {f"AEGIS_{name.upper()}" for name in Settings.model_fields}
REQUIRED_SECRETS = {
    "POSTGRES_PASSWORD",
    "TEMPORAL_DB_PASSWORD",
    "AEGIS_ADMIN_TOKEN",
    "AEGIS_SECRET_KEY",
    "AEGIS_API_KEY_PEPPER",
}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
SECRET_NAME = re.compile(r"PASSWORD|PWD|TOKEN|SECRET|API_KEY|DATABASE_URL")


# --- helpers ---------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines())
    return {p[0].strip(): p[1].strip() for p in pairs if len(p) == 2 and not p[0].lstrip().startswith("#")}


class MissingVariable(Exception):
    pass


# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, $VAR, and $$ for a literal $.
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<bare>\w+))"
)


def variables(node: Any) -> Iterator[re.Match[str]]:
    """Every variable reference in the string values of a parsed compose file
    (comments are not values, as for Compose itself)."""
    if isinstance(node, dict):
        for value in node.values():
            yield from variables(value)
    elif isinstance(node, list):
        for value in node:
            yield from variables(value)
    elif isinstance(node, str):
        yield from (m for m in _VARIABLE.finditer(node) if not m["escaped"])


def interpolate(node: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation, for the forms this project uses."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["name"] or match["bare"]
        value, op = env.get(name), match["op"] or ""
        unset = not value if op.startswith(":") else value is None
        if op.endswith("-"):
            return match["arg"] if unset else str(value)
        if op.endswith("?"):
            if unset:
                raise MissingVariable(f"{name}: {match['arg']}")
            return str(value)
        return value or ""

    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, env) for value in node]
    if isinstance(node, str):
        return _VARIABLE.sub(replace, node)
    return node


def duration_seconds(value: str | int | float) -> float:
    """A Compose duration ("30s", "1m30s", "1h") in seconds."""
    if isinstance(value, int | float):
        return float(value)
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"not a duration: {value}"
    return sum(float(number) * units[unit] for number, unit in parts)


def environment(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def command_of(service: dict[str, Any]) -> list[str]:
    parts: list[str] = []
    for key in ("entrypoint", "command"):
        value = service.get(key) or []
        parts += shlex.split(value) if isinstance(value, str) else value
    return parts


def aegis_workers(svcs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in svcs.items() if s.get("command", [])[:2] == ["aegis", "worker"]}


def image_tag(image: str) -> str:
    assert re.fullmatch(r"[\w.-]+(:\d+)?(/[\w.-]+)*:[\w.-]+", image), f"{image} is not pinned to a tag"
    tag = image.rsplit(":", 1)[1]
    assert tag != "latest", f"{image} uses latest"
    return tag


def image_repository(image: str) -> str:
    return image.rsplit(":", 1)[0]


def search_attribute_type(key: SearchAttributeKey[Any]) -> str:
    """The CLI's name of a key's type: KEYWORD -> Keyword, KEYWORD_LIST -> KeywordList."""
    name = SearchAttributeIndexedValueType(key.indexed_value_type).name
    return "".join(part.title() for part in name.split("_"))


def registered_search_attributes(script: str) -> set[tuple[str, str]]:
    return set(re.findall(r"^retry ensure_search_attribute (\w+) (\w+)$", script, re.M))


@cache
def k8s_documents() -> dict[Path, list[dict[str, Any]]]:
    """Every YAML document of infra/k8s (the Secret template included)."""
    files = sorted(p for p in K8S.rglob("*") if p.suffix in {".yaml", ".yml"} or p.name.endswith(".example"))
    return {path: [d for d in yaml.safe_load_all(path.read_text()) if d is not None] for path in files}


def k8s_manifests() -> list[dict[str, Any]]:
    """The Kubernetes objects (everything but the Helm values file)."""
    return [doc for path, docs in k8s_documents().items() if path.name != "values.yaml" for doc in docs]


def k8s_objects(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in k8s_manifests() if doc["kind"] == kind]


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    matches = [doc for doc in k8s_objects(kind) if doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return spec.get("initContainers", []) + spec["containers"]


def container_env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def helm_values() -> dict[str, Any]:
    return yaml.safe_load((K8S / "temporal" / "values.yaml").read_text())


def aegis_config() -> dict[str, str]:
    return k8s_object("ConfigMap", "aegis-config")["data"]


def setting_value(container: dict[str, Any], name: str) -> Any:
    """A setting as a container sees it: its env, else aegis-config, else the default."""
    env = container_env(container)
    if name in env and "value" in env[name]:
        return env[name]["value"]
    if name in aegis_config():
        return aegis_config()[name]
    return Settings.model_fields[name.removeprefix("AEGIS_").lower()].default


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


# --- docker-compose.yml ----------------------------------------------------------


def test_compose_file_follows_the_compose_specification() -> None:
    validator = jsonschema.Draft202012Validator(json.loads(COMPOSE_SCHEMA.read_text()))
    env = {name: "test-value" for name in REQUIRED_SECRETS}
    for label, document in (("as written", compose()), ("interpolated", interpolate(compose(), env))):
        errors = [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)
        ]
        assert errors == [], f"docker-compose.yml {label}"


def test_vendored_compose_schema_is_the_documented_copy() -> None:
    readme = (ROOT / "tests" / "data" / "compose-spec.README.md").read_text()
    digest = hashlib.sha256(COMPOSE_SCHEMA.read_bytes()).hexdigest()
    assert digest in readme, "compose-spec.json differs from the copy its README describes"
    assert (ROOT / "tests" / "data" / "compose-spec.LICENSE").is_file()


def test_compose_refuses_to_start_without_its_secrets() -> None:
    required = {m["name"] for m in variables(compose()) if (m["op"] or "").endswith("?")}
    assert required == REQUIRED_SECRETS
    full = dict.fromkeys(REQUIRED_SECRETS, "x")
    interpolate(compose(), full)
    for name in REQUIRED_SECRETS:
        with pytest.raises(MissingVariable, match=name):
            interpolate(compose(), {**full, name: ""})
    # .env.example ships no secret: copied as it is, compose refuses to start.
    with pytest.raises(MissingVariable):
        interpolate(compose(), env_example())


def test_env_example_lists_what_compose_requires() -> None:
    example = env_example()
    used = {m["name"] or m["bare"] for m in variables(compose())}
    assert used <= set(example), f"not in .env.example: {sorted(used - set(example))}"
    assert all(example[name] == "" for name in REQUIRED_SECRETS), ".env.example must not ship secrets"
    unknown = {name for name in example if name.startswith("AEGIS_")} - SETTINGS
    assert unknown == set(), f".env.example sets what the app does not read: {unknown}"


def test_compose_secrets_come_from_the_environment() -> None:
    for name, service in services().items():
        for variable, value in environment(service).items():
            if SECRET_NAME.search(variable):
                assert "${" in str(value), f"{name}: {variable} is hard-coded; take it from .env"


def test_compose_images_are_pinned() -> None:
    for name, service in services().items():
        assert "image" in service, f"{name} has no image"
        image_tag(service["image"])
        if "build" in service:
            assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file(), name


def test_compose_env_vars_are_settings_the_app_reads() -> None:
    for name, service in services().items():
        for variable in environment(service):
            if variable.startswith("AEGIS_"):
                assert variable in SETTINGS, f"{name}: {variable} is not a setting"


def test_compose_commands_exist() -> None:
    commands = set(get_command(cli_app).commands)  # type: ignore[attr-defined]
    for name, service in services().items():
        command = service.get("command")
        if command and command[0] == "aegis":
            assert command[1] in commands, f"{name}: aegis {command[1]} does not exist"


def test_compose_dependencies_exist_and_come_up_in_order() -> None:
    svcs = services()
    for name, service in svcs.items():
        for target, dependency in service.get("depends_on", {}).items():
            assert target in svcs, f"{name} depends on unknown service {target}"
            condition = dependency["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in svcs[target], f"{name} waits for {target}, which has no health check"
            elif condition == "service_completed_successfully":
                assert svcs[target].get("restart") == "no", f"{target} is waited for, so must run once"
            else:
                pytest.fail(f"{name} -> {target}: {condition} does not wait for readiness")

    def prerequisites(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
        assert name not in seen, f"dependency cycle through {name}"
        found = set()
        for target in svcs[name].get("depends_on", {}):
            found |= {target} | prerequisites(target, seen | {name})
        return found

    everything = {"postgres", "temporal-postgres", "temporal-schema", "temporal", "temporal-setup", "migrate"}
    for app in ("api", "worker", "judge-worker", "training-worker"):
        assert everything <= prerequisites(app), f"{app} may start before {everything - prerequisites(app)}"
    assert {"temporal-setup", "temporal"} <= prerequisites("temporal-ui")
    assert "temporal-schema" in prerequisites("temporal")


def test_every_long_running_compose_service_has_a_healthcheck() -> None:
    for name, service in services().items():
        one_shot = service.get("restart") == "no" or "profiles" in service
        if not one_shot:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
            assert service.get("restart") in {"unless-stopped", "always"}, f"{name} is not restarted"


def test_compose_workers_split_the_queues_and_stop_after_their_graceful_shutdown() -> None:
    workers = aegis_workers(services())
    queues = {environment(s)["AEGIS_WORKER_QUEUES"] for s in workers.values()}
    assert queues == {"evaluations", "judge", "training"}
    for name, service in workers.items():
        graceful = float(environment(service)["AEGIS_WORKER_GRACEFUL_SHUTDOWN_SECONDS"])
        assert duration_seconds(service["stop_grace_period"]) > graceful, name
        assert "ports" not in service and "container_name" not in service, f"{name} cannot be scaled"


def test_compose_registers_every_search_attribute() -> None:
    svcs = services()
    [(name, service)] = [
        (n, s) for n, s in svcs.items() if any("setup-namespace.sh" in p for p in command_of(s))
    ]
    script_path = next(p for p in command_of(service) if p.endswith("setup-namespace.sh"))
    assert f"./infra/temporal/setup-namespace.sh:{script_path}:ro" in service["volumes"]
    script = SETUP_NAMESPACE.read_text()
    expected = {(key.name, search_attribute_type(key)) for key in search_attributes.ALL}
    assert registered_search_attributes(script) == expected
    assert (
        'temporal operator search-attribute create --namespace "$NAMESPACE" --name "$1" --type "$2"' in script
    )
    assert "temporal operator namespace create" in script
    assert image_repository(service["image"]) == "temporalio/admin-tools"
    env = environment(service)
    assert env["TEMPORAL_ADDRESS"] == environment(svcs["api"])["AEGIS_TEMPORAL_ADDRESS"]
    assert env["NAMESPACE"] == environment(svcs["api"])["AEGIS_TEMPORAL_NAMESPACE"]
    assert svcs[name]["depends_on"]["temporal"]["condition"] == "service_healthy"


def test_compose_sets_up_both_temporal_databases() -> None:
    svcs = services()
    [service] = [s for s in svcs.values() if any("setup-schema.sh" in p for p in command_of(s))]
    script_path = next(p for p in command_of(service) if p.endswith("setup-schema.sh"))
    assert f"./infra/temporal/setup-schema.sh:{script_path}:ro" in service["volumes"]
    script = SETUP_SCHEMA.read_text()
    databases = dict(re.findall(r"^setup_database (\w+) (\w+)$", script, re.M))
    assert databases == {"temporal": "temporal", "temporal_visibility": "visibility"}
    for step in ("create-database", "setup-schema -v 0.0", "update-schema -d"):
        assert step in script, step
    server = environment(svcs["temporal"])
    assert {server["DBNAME"], server["VISIBILITY_DBNAME"]} == set(databases)
    assert server["POSTGRES_SEEDS"] == environment(service)["SQL_HOST"]
    assert server["POSTGRES_PWD"] == environment(service)["SQL_PASSWORD"]


def test_temporal_scripts_are_valid_shell() -> None:
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no sh")
    for script in (SETUP_NAMESPACE, SETUP_SCHEMA):
        result = subprocess.run([sh, "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script.name}: {result.stderr}"
        assert "set -eu" in script.read_text(), script.name


def test_compose_temporal_reads_its_dynamic_config() -> None:
    temporal = services()["temporal"]
    mount = "/etc/temporal/config/dynamicconfig"
    assert f"./infra/temporal/dynamicconfig:{mount}:ro" in temporal["volumes"]
    path = environment(temporal)["DYNAMIC_CONFIG_FILE_PATH"]
    assert path.startswith(mount + "/")
    config_file = TEMPORAL_DIR / "dynamicconfig" / path.removeprefix(mount + "/")
    config = yaml.safe_load(config_file.read_text())
    assert config["limit.maxIDLength"][0]["value"] == 255
    # Labels arrive by update-with-start: the server must accept both.
    assert config["frontend.enableUpdateWorkflowExecution"][0]["value"] is True
    assert config["frontend.enableExecuteMultiOperation"][0]["value"] is True
    for key, entries in config.items():
        assert isinstance(entries, list) and entries, key
        for entry in entries:
            assert set(entry) <= {"value", "constraints"} and "value" in entry, key


def test_temporal_images_are_one_release_everywhere() -> None:
    images = [s["image"] for s in services().values()]
    images += [c["image"] for w in k8s_manifests() if w["kind"] in WORKLOAD_KINDS for c in containers(w)]
    values = helm_values()
    for section in (values["server"], values["admintools"], values["web"]):
        images.append(f"{section['image']['repository']}:{section['image']['tag']}")
    tags: dict[str, set[str]] = {}
    for image in images:
        tags.setdefault(image_repository(image), set()).add(image_tag(image))
    # The admin tools carry the schema files and CLI of their server release.
    assert tags["temporalio/server"] == tags["temporalio/admin-tools"]
    assert len(tags["temporalio/server"]) == 1
    assert len(tags["temporalio/ui"]) == 1


# --- infra/Dockerfile ----------------------------------------------------------------


def dockerfile_stages() -> list[str]:
    """The stages of infra/Dockerfile, comments left out."""
    lines = (INFRA / "Dockerfile").read_text().splitlines(keepends=True)
    text = "".join(line for line in lines if not line.lstrip().startswith("#"))
    return re.split(r"^(?=FROM )", text, flags=re.M)[1:]


def test_dockerfile_runs_as_non_root_on_a_pinned_base() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "expected a build stage and a runtime stage"
    for stage in stages:
        base = stage.split()[1]
        assert re.fullmatch(r"[\w./-]+:\d[\w.-]*", base), base
    final = stages[-1]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", final.split()[1])
    users = re.findall(r"^USER (\S+)", final, re.M)
    assert users, "the final stage sets no USER"
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_dockerfile_builds_wheels_and_ships_no_compiler() -> None:
    *build, final = dockerfile_stages()
    assert any("pip wheel" in stage for stage in build)
    assert not re.search(r"\b(gcc|g\+\+|build-essential|clang|make)\b", final)
    assert "apt-get install" not in final
    installs = re.findall(r"pip install[^\n]*", final)
    assert installs and all("--no-index" in line for line in installs)
    assert not re.search(r"\[[^\]]*\b(embedded|test)\b", final), "dev extras in the runtime image"
    assert "COPY alembic ./alembic" in final and "COPY alembic.ini" in final


def test_dockerignore_keeps_secrets_out_of_the_build_context() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert {".env", ".git"} <= set(ignored)


# --- Kubernetes ------------------------------------------------------------------------


def test_kubernetes_yaml_documents_parse() -> None:
    documents = k8s_documents()
    assert len(documents) >= 8
    for path, docs in documents.items():
        assert docs, path
        if path.name == "values.yaml":
            continue
        for doc in docs:
            assert {"apiVersion", "kind", "metadata"} <= set(doc), path
            if doc["kind"] != "Namespace":
                assert doc["metadata"].get("namespace") in {"aegis", "temporal"}, path


def test_kubernetes_containers_have_resources_and_run_as_non_root() -> None:
    workloads = [d for d in k8s_manifests() if d["kind"] in WORKLOAD_KINDS]
    assert len(workloads) >= 5
    for workload in workloads:
        name = workload["metadata"]["name"]
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"].get("runAsUser", 1) != 0, name
        for container in containers(workload):
            resources = container.get("resources", {})
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(part, {})), (
                    f"{name}/{container['name']}: {part}"
                )
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            image_tag(container["image"])


def test_every_deployment_has_an_autoscaler() -> None:
    deployments = {d["metadata"]["name"] for d in k8s_objects("Deployment")}
    assert deployments == {"aegis-api", "aegis-worker", "aegis-judge-worker", "aegis-training-worker"}
    targets = {}
    for hpa in k8s_objects("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment"
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert any(m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"])
        targets[ref["name"]] = hpa
    assert deployments <= set(targets)
    for name in deployments:
        # The HPA owns the replica count; a fixed one would fight it on every apply.
        assert "replicas" not in k8s_object("Deployment", name)["spec"], name


def test_api_has_readiness_and_liveness_probes() -> None:
    [container] = k8s_object("Deployment", "aegis-api")["spec"]["template"]["spec"]["containers"]
    routes = {route.path for route in health.router.routes}  # type: ignore[attr-defined]
    ports = {p.get("name") for p in container["ports"]} | {p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] in routes, probe
        assert container[probe]["httpGet"]["port"] in ports, probe
    service = k8s_object("Service", "aegis-api")
    assert service["spec"]["ports"][0]["targetPort"] in ports


def test_kubernetes_env_vars_are_settings_the_app_reads() -> None:
    assert set(aegis_config()) <= SETTINGS, set(aegis_config()) - SETTINGS
    [template] = [d for p, docs in k8s_documents().items() if p.name == "secret.yaml.example" for d in docs]
    secret_keys = set(template["stringData"])
    assert secret_keys <= SETTINGS
    assert not (secret_keys & set(aegis_config())), "a secret in the ConfigMap"
    for workload in k8s_manifests():
        if workload["kind"] not in WORKLOAD_KINDS or workload["metadata"]["namespace"] != "aegis":
            continue
        for container in containers(workload):
            for name, item in container_env(container).items():
                assert name in SETTINGS, f"{workload['metadata']['name']}: {name} is not a setting"
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "aegis-secrets" and ref["key"] in secret_keys, name
                if SECRET_NAME.search(name):
                    assert ref, f"{name} must come from the Secret"
            for source in container.get("envFrom", []):
                k8s_object("ConfigMap", source["configMapRef"]["name"])


def test_kubernetes_commands_exist() -> None:
    commands = set(get_command(cli_app).commands)  # type: ignore[attr-defined]
    for workload in k8s_manifests():
        if workload["kind"] in WORKLOAD_KINDS:
            for container in containers(workload):
                command = container.get("command", [])
                if command[:1] == ["aegis"]:
                    assert command[1] in commands, f"aegis {command[1]} does not exist"


def test_kubernetes_workers_stop_after_their_graceful_shutdown() -> None:
    queues = set()
    for deployment in k8s_objects("Deployment"):
        spec = pod_spec(deployment)
        for container in spec["containers"]:
            if container["command"][:2] != ["aegis", "worker"]:
                continue
            queues.add(setting_value(container, "AEGIS_WORKER_QUEUES"))
            graceful = float(setting_value(container, "AEGIS_WORKER_GRACEFUL_SHUTDOWN_SECONDS"))
            assert spec["terminationGracePeriodSeconds"] > graceful, deployment["metadata"]["name"]
    assert queues == {"evaluations", "judge", "training"}


def test_search_attribute_job_runs_the_compose_script() -> None:
    configmap = k8s_object("ConfigMap", "aegis-temporal-setup")
    assert configmap["data"]["setup-namespace.sh"] == SETUP_NAMESPACE.read_text()
    job = k8s_object("Job", "aegis-search-attributes")
    spec = pod_spec(job)
    [container] = spec["containers"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "script"]
    [volume] = [v for v in spec["volumes"] if v["name"] == "script"]
    assert volume["configMap"]["name"] == "aegis-temporal-setup"
    assert container["command"] == ["/bin/sh", f"{mount['mountPath']}/setup-namespace.sh"]
    env = {name: item["value"] for name, item in container_env(container).items()}
    assert env["TEMPORAL_ADDRESS"] == aegis_config()["AEGIS_TEMPORAL_ADDRESS"]
    assert env["NAMESPACE"] == aegis_config()["AEGIS_TEMPORAL_NAMESPACE"]


def test_temporal_helm_values_use_external_postgresql_and_the_ui() -> None:
    values = helm_values()
    persistence = values["server"]["config"]["persistence"]
    stores = persistence["datastores"]
    assert {persistence["defaultStore"], persistence["visibilityStore"]} == {"default", "visibility"}
    for store, database in (("default", "temporal"), ("visibility", "temporal_visibility")):
        sql = stores[store]["sql"]
        assert sql["pluginName"] == "postgres12" and sql["databaseName"] == database
        assert sql["existingSecret"] and "password" not in sql, "the password belongs in a Secret"
    assert values["web"]["enabled"] is True
    namespaces = {n["name"] for n in values["server"]["config"]["namespaces"]["namespace"]}
    assert aegis_config()["AEGIS_TEMPORAL_NAMESPACE"] in namespaces
    frontend = aegis_config()["AEGIS_TEMPORAL_ADDRESS"]
    assert frontend.startswith("temporal-frontend.temporal.svc"), "release temporal in namespace temporal"
    production = yaml.safe_load((TEMPORAL_DIR / "dynamicconfig" / "production.yaml").read_text())
    assert values["server"]["dynamicConfig"] == production


# --- README --------------------------------------------------------------------------------

COMMAND_NAMES = {"docker", "kubectl", "helm", "aegis", "cp"}
FILE_FLAGS = {"-f", "--file", "--filename", "--values", "--from-file", "--env-file", "-k", "--kustomize"}
OPERATORS = {"&&", "||", "|", ";", "&"}
REPO_DIRECTORIES = ("infra/", "./infra/", "tests/")
REPO_FILES = {".env.example", "docker-compose.yml"}


def readme_commands(section: str) -> list[list[str]]:
    """The docker, kubectl, helm, aegis and cp commands of a README section, as
    shell words: from its code blocks (continuation lines joined) and inline
    code spans, split at &&, ||, | and ;, without redirections. A lone word
    (`aegis`, `docker compose`) in prose is a name, not a command."""
    lines = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", section, re.S):
        lines += block.replace("\\\n", " ").splitlines()
    lines += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", section, flags=re.S))
    commands = []
    for line in lines:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        current: list[str] = []
        redirect_target = False
        for token in [*lexer, ";"]:
            if redirect_target:
                redirect_target = False
            elif token in OPERATORS:
                if len(current) > 1 and current[0] in COMMAND_NAMES and current[1:] != ["compose"]:
                    commands.append(current)
                current = []
            elif token in {">", ">>", "<"}:
                redirect_target = True
            else:
                current.append(token)
    return commands


def referenced_files(words: list[str]) -> list[str]:
    """The repository files a command names (for `logs`, -f means follow)."""
    file_flags = FILE_FLAGS - {"-f"} if "logs" in words[:4] else FILE_FLAGS
    files = []
    for previous, word in zip(["", *words], words, strict=False):
        flag, _, attached = word.partition("=")
        if previous in file_flags:
            files.append(word)
        elif flag in file_flags and attached:
            files.append(attached)
        elif word.startswith(REPO_DIRECTORIES) or word in REPO_FILES:
            files.append(word)
    return [f for f in files if "://" not in f and f != "-"]


def test_readme_production_commands_reference_files_that_exist() -> None:
    commands = readme_commands(readme_section("Production"))
    assert len(commands) >= 15
    checked = 0
    for words in commands:
        for name in referenced_files(words):
            path = name.removeprefix("./")
            matches = list(ROOT.glob(path.rstrip("/"))) if "*" in path else [ROOT / path]
            assert matches and all(m.exists() for m in matches), f"{shlex.join(words)}: {name} does not exist"
            checked += 1
    assert checked >= 8, "expected the Production section to name the deployment files"


def test_readme_production_commands_name_real_services_and_commands() -> None:
    section = readme_section("Production")
    svcs = services()
    cli_commands = set(get_command(cli_app).commands)  # type: ignore[attr-defined]
    for words in readme_commands(section):
        if words[:2] == ["docker", "compose"]:
            for scaled in re.findall(r"--scale[ =](\S+?)=\d+", " ".join(words)):
                assert scaled in svcs, f"{shlex.join(words)}: no service {scaled}"
            if words[2:3] in (["run"], ["exec"], ["logs"]):
                named = [w for w in words[3:] if not w.startswith("-")]
                assert named and named[0] in svcs, f"{shlex.join(words)}: no service {named[:1]}"
        elif words[0] == "aegis":
            assert words[1] in cli_commands, f"{shlex.join(words)}: aegis {words[1]} does not exist"
    for needed in ("cp .env.example .env", "docker compose up -d", "docker compose ps", "--scale worker="):
        assert needed in section, needed
    for needed in ("helm install", "infra/k8s/temporal/values.yaml", "kubectl apply -f infra/k8s/"):
        assert needed in section, needed
    for endpoint in ("/api/v1/usage", "/api/v1/stuck-evaluations", "GET /metrics", "aegis_evaluations_total"):
        assert endpoint in section, endpoint


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [
        f"AEGIS_{name.upper()}" for name in Settings.model_fields if f"`AEGIS_{name.upper()}`" not in readme
    ]
    assert missing == []
