"""k8s/: both overlays render with kustomize (kubectl's), validate against the Kubernetes API
schemas (kubernetes-validate) and the CRDs' schemas (KEDA, prometheus-operator), and agree
with the worker: its settings, port, probes, user, shutdown budget and metric names."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram

from consumer.config import OPTIONS, Settings
from consumer.metrics import Metrics
from tests.deploy.conftest import DEPLOY_VENV, ROOT, run, tool

K8S = ROOT / "k8s"
OVERLAYS = ("dev", "prod")
CUSTOM = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}
COMMON = {
    "Namespace", "ServiceAccount", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget",
    "NetworkPolicy", "ServiceMonitor", "PrometheusRule",
}  # fmt: skip
AUTOSCALER = {"dev": {"HorizontalPodAutoscaler"}, "prod": {"ScaledObject", "TriggerAuthentication"}}
# Labels Prometheus (operator) attaches to every scraped series.
TARGET_LABELS = {"namespace", "pod", "container", "service", "endpoint", "job", "instance"}
OPTION_BY_ENV = {option.env: option for option in OPTIONS}


def render(overlay: str | Path) -> list[dict[str, Any]]:
    done = run(tool("kubectl"), "kustomize", str(overlay), timeout=60)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    name: str = request.param
    objects = render(K8S / "overlays" / name)
    path = tmp_path_factory.mktemp(name) / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    return name, objects, path


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def config_of(objects: list[dict[str, Any]]) -> dict[str, str]:
    maps = [o for o in objects if o["kind"] == "ConfigMap" and "TELEMAX_STREAM" in o["data"]]
    (config,) = maps
    data: dict[str, str] = config["data"]
    return data


def worker_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = container
    return found


# --- schemas -----------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_overlay_validates_against_the_kubernetes_schemas(overlay: Any) -> None:
    _, objects, path = overlay
    done = run(tool("kubernetes-validate"), "--strict", path, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    builtin = [o for o in objects if o["kind"] not in CUSTOM]
    passed = re.findall(r"passed for resource (\S+)", done.stdout)
    assert len(passed) == len(builtin), done.stdout
    assert "ERROR" not in done.stdout


@pytest.mark.timeout(60)
def test_custom_resources_validate_against_their_crds(overlay: Any) -> None:
    _, objects, _ = overlay
    custom = [o for o in objects if o["kind"] in CUSTOM]
    assert custom
    results = validate_custom(custom)
    assert [r for r in results if not r["ok"]] == []
    assert len(results) == len(custom)


def validate_custom(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    modules = DEPLOY_VENV / "crd" / "node_modules"
    if not (modules / "@kubernetes-models").is_dir():
        pytest.fail(f"{modules} is missing: run `make deploy-tools` (make test does it)")
    done = run(
        "node", ROOT / "tests/deploy/crd/validate.mjs", modules, input=json.dumps(objects)
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


@pytest.mark.timeout(60)
def test_the_validators_reject_broken_objects(tmp_path: Path) -> None:
    """The schema checks above can fail: a broken Deployment and ScaledObject are refused."""
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": 1}]}}},
    }
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(deployment))
    done = run(tool("kubernetes-validate"), "--strict", path)
    assert done.returncode != 0 and "ERROR" in done.stdout
    scaled = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {"scaleTargetRef": {"name": "x"}, "minReplicaCount": "one", "triggers": []},
    }
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    first, second = validate_custom([scaled, unknown])
    assert not first["ok"] and "minReplicaCount" in first["error"]
    assert not second["ok"] and "no schema" in second["error"]


# --- what each overlay contains ----------------------------------------------------------------


def test_overlay_has_the_objects_and_one_autoscaler(overlay: Any) -> None:
    name, objects, _ = overlay
    kinds = {o["kind"] for o in objects}
    assert kinds == COMMON | AUTOSCALER[name]
    namespace = one(objects, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace["metadata"]["name"], obj["kind"]


def test_worker_pod_is_restricted(overlay: Any) -> None:
    _, objects, _ = overlay
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    container = worker_container(objects)
    security = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security.get("privileged", False) is False
    # The image's USER (Dockerfile) is the uid Kubernetes runs: no surprise root.
    user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert user is not None
    assert str(pod["securityContext"]["runAsUser"]) == user[1]
    assert str(pod["securityContext"]["runAsGroup"]) == user[2]
    for key in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][key])
    assert pod["automountServiceAccountToken"] is False
    # A writable /tmp, since the root filesystem is read-only.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in {v["name"]: v for v in pod["volumes"]}[mounts["/tmp"]]


def test_probes_port_and_shutdown_budget_match_the_worker(overlay: Any) -> None:
    _, objects, _ = overlay
    config = config_of(objects)
    deployment = one(objects, "Deployment")
    container = worker_container(objects)
    port = int(config.get("TELEMAX_METRICS_PORT", Settings().metrics_port))
    (metrics_port,) = container["ports"]
    assert metrics_port["containerPort"] == port
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert metrics_port["name"] == "metrics"
    grace = float(config.get("TELEMAX_SHUTDOWN_GRACE_S", Settings().shutdown_grace_s))
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace
    # The autoscaler owns the replica count; a fixed one would fight it on every apply.
    assert "replicas" not in deployment["spec"]
    assert container["args"] == ["run"]
    assert "command" not in container  # the image's exec-form ENTRYPOINT gets SIGTERM


def test_configuration_uses_the_worker_settings(overlay: Any) -> None:
    _, objects, _ = overlay
    config = config_of(objects)
    container = worker_container(objects)
    for name, value in config.items():
        if name.startswith("TELEMAX_"):
            assert name in OPTION_BY_ENV, f"{name} is not a telemax setting"
            OPTION_BY_ENV[name].parse(value)  # raises on a value the worker would refuse
        else:
            assert name.startswith("AWS_"), name
    # botocore reads AWS_DEFAULT_REGION only; AWS_REGION alone leaves the worker without one.
    assert config["AWS_REGION"] == config["AWS_DEFAULT_REGION"]
    (env_from,) = container["envFrom"]
    assert env_from["configMapRef"]["name"] in {
        o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"
    }
    explicit = {e["name"]: e for e in container.get("env", [])}
    assert explicit["TELEMAX_WORKER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    account = one(objects, "ServiceAccount")
    role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+", role)
    assert (
        one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
        == (account["metadata"]["name"])
    )


def test_selectors_find_the_worker_pods(overlay: Any) -> None:
    _, objects, _ = overlay
    deployment = one(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict[str, str]) -> bool:
        return bool(selector) and selector.items() <= pod_labels.items()

    service = one(objects, "Service")
    assert selects(deployment["spec"]["selector"]["matchLabels"])
    assert selects(service["spec"]["selector"])
    assert selects(one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"])
    policy = one(objects, "NetworkPolicy")
    assert selects(policy["spec"]["podSelector"]["matchLabels"])
    assert {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]} == {9108}
    monitor = one(objects, "ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [
        p["name"] for p in service["spec"]["ports"]
    ]


def test_autoscaler_targets_the_worker(overlay: Any) -> None:
    name, objects, _ = overlay
    config = config_of(objects)
    deployment = one(objects, "Deployment")["metadata"]["name"]
    if name == "prod":
        scaled = one(objects, "ScaledObject")["spec"]
        assert scaled["scaleTargetRef"]["name"] == deployment
        (trigger,) = scaled["triggers"]
        assert trigger["type"] == "aws-kinesis-stream"
        assert trigger["metadata"]["streamName"] == config["TELEMAX_STREAM"]
        assert trigger["metadata"]["awsRegion"] == config["AWS_REGION"]
        assert int(trigger["metadata"]["shardCount"]) >= 1
        auth = one(objects, "TriggerAuthentication")
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
        assert auth["spec"]["podIdentity"]["provider"] == "aws"
        assert scaled["minReplicaCount"] >= 1
    else:
        hpa = one(objects, "HorizontalPodAutoscaler")["spec"]
        assert hpa["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": deployment,
        }
        assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]


# --- alerts and dashboard use our metrics ------------------------------------------------------


def metric_series() -> dict[str, set[str]]:
    """Every series name the worker exports -> its label names."""
    series: dict[str, set[str]] = {}
    for metric in vars(Metrics("s")).values():
        if not isinstance(metric, Counter | Gauge | Histogram):
            continue
        name, labels = metric._name, set(metric._labelnames)
        if isinstance(metric, Counter):
            suffixes = ["_total", "_created"]
        elif isinstance(metric, Histogram):
            suffixes = ["_bucket", "_sum", "_count", "_created"]
            series[name + "_bucket"] = labels | {"le"}
            suffixes.remove("_bucket")
        else:
            suffixes = [""]
        for suffix in suffixes:
            series[name + suffix] = labels
    return series


def readme_metrics() -> set[str]:
    names = re.findall(r"^\| `(telemax_\w+)` \|", (ROOT / "README.md").read_text(), re.M)
    return set(names)


def readme_name(series: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if series.endswith(suffix):
            return series.removesuffix(suffix)
    return series


def analyse(exprs: list[str]) -> list[dict[str, Any]]:
    done = run(
        tool("python"), ROOT / "tests/deploy/promql_names.py", input=json.dumps(exprs)
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


def check_expressions(exprs: list[str]) -> set[str]:
    """Each expression parses, selects only metrics the worker exports (and README lists), and
    uses only their labels; returns the metric names used."""
    series, documented = metric_series(), readme_metrics()
    used: set[str] = set()
    for expr, result in zip(exprs, analyse(exprs), strict=True):
        assert result["error"] is None, f"{expr!r}: {result['error']}"
        known: set[str] = set(TARGET_LABELS)
        for name in result["metrics"]:
            if name == "up":  # Prometheus' own
                continue
            assert name in series, f"{expr!r}: {name} is not a metric of consumer/metrics.py"
            assert readme_name(name) in documented, f"{name} is not in README's metrics table"
            known |= series[name]
            used.add(name)
        assert set(result["labels"]) <= known, f"{expr!r}: unknown labels"
    return used


def test_the_metric_checks_can_fail() -> None:
    bad = [
        "rate(telemax_records_writen_total[5m])",
        "sum by (shard_id) (telemax_millis_behind_latest)",
        "rate(telemax_records_written_total[5m]",
    ]
    for expr in bad:
        with pytest.raises(AssertionError):
            check_expressions([expr])


def test_alerts_cover_the_failure_modes_with_our_metrics() -> None:
    base = yaml.safe_load((K8S / "base" / "prometheusrule.yaml").read_text())
    rules = [rule for group in base["spec"]["groups"] for rule in group["rules"]]
    used = check_expressions([rule["expr"] for rule in rules])
    by_metric = {
        "lag rising": "telemax_millis_behind_latest",
        "dead letters": "telemax_records_dead_lettered_total",
        "lease churn": "telemax_leases_lost_total",
        "throttling": "telemax_throttles_total",
        "no progress": "telemax_checkpoint_age_seconds",
    }
    for concern, metric in by_metric.items():
        assert metric in used, f"no alert on {concern} ({metric})"
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_dashboard_uses_our_metrics() -> None:
    dashboard = json.loads((K8S / "base" / "grafana" / "telemax-dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    referenced = set(re.findall(r"\$(\w+)", " ".join(exprs))) - {"__rate_interval"}
    assert referenced <= variables
    substituted = [
        re.sub(r"label_values\((.*), (\w+)\)$", r"\1", e)
        .replace("$__rate_interval", "5m")
        .replace("$namespace", "ns")
        .replace("$stream", ".*")
        for e in exprs
    ]
    used = check_expressions(substituted)
    # The throughput, lag, lease and AWS panels are all there.
    for metric in (
        "telemax_records_written_total",
        "telemax_millis_behind_latest",
        "telemax_leases_held",
        "telemax_batch_write_seconds_bucket",
        "telemax_throttles_total",
    ):
        assert metric in used
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


# --- checkov on what is applied --------------------------------------------------------------


@pytest.mark.timeout(120)
def test_checkov_passes_the_rendered_overlays_and_every_skip_is_justified(
    tmp_path: Path,
) -> None:
    """The manifests a cluster receives are the rendered overlays, not the base: checkov runs
    on those. A skip lives in the manifest as a ``checkov.io/skip`` annotation with its
    reason."""
    for name in OVERLAYS:
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump_all(render(K8S / "overlays" / name)))
    done = run(
        tool("checkov"), "--directory", tmp_path, "--framework", "kubernetes",
        "--skip-download", "--output", "json", timeout=110,
    )  # fmt: skip
    assert done.stdout.strip(), done.stderr
    report = json.loads(done.stdout)
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert failed == [] and done.returncode == 0
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] >= 150
    for check in report["results"]["skipped_checks"]:
        assert len(check["check_result"].get("suppress_comment", "")) > 40, check["check_id"]


def test_production_runs_an_image_pinned_by_digest() -> None:
    container = worker_container(render(K8S / "overlays" / "prod"))
    assert re.fullmatch(r".+/telemax@sha256:[0-9a-f]{64}", container["image"])
