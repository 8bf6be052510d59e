"""deploy/: every manifest parses and validates offline (Kubernetes schemas from kubernetes-validate, KubeRay's
from the hand-written subset in deploy/schemas/), the Grafana dashboard queries only metrics that exist, and the
commands in the manifests use only flags the `autotune` CLI has."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.30.0"  # the oldest Kubernetes these manifests target

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (test extra)")


def _yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def _manifests() -> list[tuple[str, dict]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    files = [*kustomization["resources"], "secret.example.yaml"]
    return [(f"{name}#{i}", doc) for name in files for i, doc in enumerate(_docs(K8S / name))]


def test_every_yaml_and_json_parses():
    assert _yaml_files(), "no YAML under deploy/"
    for path in _yaml_files():
        assert _docs(path), f"{path}: empty"
    for path in sorted(DEPLOY.rglob("*.json")):
        json.loads(path.read_text(encoding="utf-8"))


def test_kustomization_lists_every_manifest_but_the_example_secret():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == on_disk


def _pod_template_check(template: dict, where: str) -> None:
    wrapper = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"}, "template": template}
    try:
        kubernetes_validate.validate(wrapper, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        raise AssertionError(f"{where}: pod template: {exc.message} at {list(exc.path)}") from None


@pytest.mark.parametrize("name,doc", _manifests(), ids=lambda v: v if isinstance(v, str) else "")
def test_manifest_validates(name, doc):
    kind = doc["kind"]
    if doc["apiVersion"] == "ray.io/v1":
        schema = json.loads((DEPLOY / "schemas" / f"{kind.lower()}-ray-v1.json").read_text(encoding="utf-8"))
        jsonschema.validate(doc, schema)
        spec = doc["spec"]
        cluster = spec.get("rayClusterSpec", spec if kind == "RayCluster" else None)
        templates = [("submitterPodTemplate", spec["submitterPodTemplate"])] if "submitterPodTemplate" in spec else []
        if cluster:
            templates.append(("head", cluster["headGroupSpec"]["template"]))
            templates += [(g["groupName"], g["template"]) for g in cluster.get("workerGroupSpecs", [])]
        for where, template in templates:
            _pod_template_check(template, f"{name} {where}")
    else:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{name}: {exc.message} at {list(exc.path)}") from None


def test_gpu_workers_request_gpus_and_scale_within_bounds():
    (cluster,) = _docs(K8S / "raycluster.yaml")
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    for group in cluster["spec"]["workerGroupSpecs"]:
        resources = group["template"]["spec"]["containers"][0]["resources"]
        assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"]
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_no_password_in_manifests_or_commands():
    (secret,) = _docs(K8S / "secret.example.yaml")
    assert "placeholder" in secret["stringData"]["POSTGRES_PASSWORD"].lower()
    for path in _yaml_files():
        for url in re.findall(r"postgresql(?:\+\w+)?://[^\s\"']+", path.read_text(encoding="utf-8")):
            rest = url.split("//", 1)[1]
            assert "@" not in rest or ":" not in rest.split("@", 1)[0], f"{path}: a password in {url}"
    script = _docs(K8S / "jobs-configmap.yaml")[0]["data"]["run-models.sh"]
    assert not re.search(r"^\s*set -[a-z]*x", script, re.M), "the job script must not trace its commands"


# --- metric names -----------------------------------------------------------------------------

_SIM_NAMES = """
import prometheus_client.parser as p
from autotune.hardware import load_gpu
from autotune.models import load_model
from autotune.pools import pinned_budget
from autotune.sim.config import SimServerConfig
from autotune.sim.engine import SimEngine
from autotune.sim.prometheus import MetricLabels, ServerMetrics
engine = SimEngine(SimServerConfig(model=load_model("26B-A4B"), gpu=load_gpu("H100"), swa_full_tokens_ratio=0.5,
                                   kv_budget_bytes=pinned_budget(5.0).bytes))
m = ServerMetrics(engine, MetricLabels("m"), lambda: 0.0)
m.observe_first_token(0.1, 0.01, True); m.observe_tokens(0.1, 2); m.observe_finished(10, 2, 0.3, True)
for family in p.text_string_to_metric_families(m.render().decode()):
    for sample in family.samples:
        print(sample.name)
"""


@pytest.fixture(scope="module")
def exposed_names() -> set[str]:
    # A subprocess: ServerMetrics turns off prometheus_client's _created series process-wide.
    sim = subprocess.run([sys.executable, "-c", _SIM_NAMES], capture_output=True, text=True, check=True, cwd=ROOT, timeout=60)
    names = set(sim.stdout.split())
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client import generate_latest

    from autotune.tuner_metrics import TunerMetrics

    tuner = TunerMetrics()
    tuner.trial_started("s"); tuner.trial_finished("s", "complete", 1.0, "hang"); tuner.best("s", 1.0, "x")
    tuner.set_workers(1, 0); tuner.boot_seconds("s", 1.0)
    for family in text_string_to_metric_families(generate_latest(tuner.registry).decode()):
        names |= {s.name for s in family.samples}
    return names


def _dashboard_exprs() -> list[str]:
    dash = json.loads((DEPLOY / "grafana" / "swa-autotune.json").read_text(encoding="utf-8"))
    exprs = [t["expr"] for panel in dash["panels"] for t in panel.get("targets", [])]
    exprs += [v["definition"] for v in dash["templating"]["list"] if "definition" in v]
    return exprs


METRIC = re.compile(r"\b(sglang:[a-zA-Z_:][\w:]*|autotune_\w+)")


def test_dashboard_queries_only_existing_metrics(exposed_names):
    assert {"sglang:swa_token_usage", "autotune_trials_running"} <= exposed_names
    used = {m for expr in _dashboard_exprs() for m in METRIC.findall(expr)}
    assert {"sglang:swa_token_usage", "sglang:full_token_usage", "sglang:num_queue_reqs", "sglang:num_running_reqs",
            "sglang:gen_throughput", "sglang:num_retracted_requests_total"} <= used
    assert any(name.startswith("autotune_") for name in used)
    missing = sorted(name for name in used if name not in exposed_names)
    assert not missing, f"the dashboard queries metrics nothing exports: {missing}"


def test_dashboard_is_a_grafana_dashboard():
    dash = json.loads((DEPLOY / "grafana" / "swa-autotune.json").read_text(encoding="utf-8"))
    assert 36 <= dash["schemaVersion"] <= 41
    assert any(v["type"] == "datasource" and v["query"] == "prometheus" for v in dash["templating"]["list"])
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"


def test_prometheus_config():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["autotune-tuner"]["static_configs"][0]["targets"][0].endswith(":9400")
    (sd,) = jobs["sglang-trials"]["http_sd_configs"]
    assert sd["url"].endswith(":9400/sd")


# --- commands against the CLI --------------------------------------------------------------------

def _help_flags(*command: str) -> set[str]:
    out = subprocess.run([sys.executable, "-m", "autotune.cli.app", *command, "--help"], capture_output=True, text=True,
                         cwd=ROOT, timeout=60, env={"COLUMNS": "300", "TERM": "dumb", "PATH": "/usr/bin:/bin",
                                                    "NO_COLOR": "1", **_pythonpath()})
    assert out.returncode == 0, out.stderr
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[a-zA-Z])\b", out.stdout))


def _pythonpath() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "HOME", "VIRTUAL_ENV")}


def _autotune_commands() -> list[list[str]]:
    """Every `autotune SUBCOMMAND ...` in the k8s manifests (container commands, the RayJob's script) and
    deploy/ray/cluster.yaml's comments."""
    commands: list[list[str]] = []
    for name, doc in _manifests():
        if doc["kind"] == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                argv = [*container.get("command", []), *container.get("args", [])]
                if argv and argv[0] == "autotune":
                    commands.append(argv)
        if doc["kind"] == "ConfigMap":
            for text in doc.get("data", {}).values():
                for line in text.splitlines():
                    if line.strip().startswith("autotune "):
                        commands.append(shlex.split(line.strip()))
    return commands


def test_commands_use_existing_flags():
    commands = _autotune_commands()
    assert {argv[1] for argv in commands} >= {"run", "dashboard"}
    helps: dict[str, set[str]] = {}
    for argv in commands:
        sub = argv[1]
        flags = helps.setdefault(sub, _help_flags(sub))
        used = [a.split("=", 1)[0] for a in argv[2:] if a.startswith("-")]
        unknown = [f for f in used if f not in flags]
        assert not unknown, f"`{' '.join(argv[:2])}` uses flags its --help does not list: {unknown}"


def test_rayjob_runs_the_script_with_models():
    (job,) = _docs(K8S / "rayjob.yaml")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["bash", "/opt/autotune/run-models.sh"] and argv[2:] == ["26B-A4B", "31B", "E4B"]
    (cluster,) = _docs(K8S / "raycluster.yaml")
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == cluster["metadata"]["name"]
    mounts = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "jobs", "mountPath": "/opt/autotune"} in mounts
    script = _docs(K8S / "jobs-configmap.yaml")[0]["data"]["run-models.sh"]
    assert '--storage "$AUTOTUNE_STORAGE"' in script and "--backend sglang" in script


def test_sglang_deployment_uses_the_exported_config():
    cm, deployment, _service = _docs(K8S / "sglang-serve.yaml")
    (file_name, text), = cm["data"].items()
    assert yaml.safe_load(text) == {"swa-full-tokens-ratio": 0.15}
    assert text.startswith("# SGLang --config file written by swa-autotune")
    argv = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    assert argv[:3] == ["python3", "-m", "sglang.launch_server"]
    assert argv[argv.index("--config") + 1] == f"/config/{file_name}"
    assert "--model-path" in argv


def test_ray_up_config():
    config = yaml.safe_load((DEPLOY / "ray" / "cluster.yaml").read_text(encoding="utf-8"))
    assert config["provider"]["type"] == "local"
    assert config["provider"]["head_ip"] and config["provider"]["worker_ips"]
    assert any("pip install" in c for c in config["setup_commands"])
    assert all("--num-gpus" in " ".join(config[k]) for k in ("head_start_ray_commands", "worker_start_ray_commands"))
