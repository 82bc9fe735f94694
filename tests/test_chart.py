"""The Helm chart (charts/scorer), rendered by Helm's own engine (tests/helm_chart.py) for every values
file of charts/scorer/ci: every object is valid against the Kubernetes OpenAPI schemas of 1.30 (the
chart's kubeVersion floor) and of the newest version kubernetes-validate knows, strictly (an unknown
field fails), the ServiceMonitor against the Prometheus Operator's own schema, and every pod meets the
chart's policy (probes, non-root, read-only root, no capabilities, limits, graceful termination).
Contradictory values fail at render time with a message naming the keys. No process is started: the
pods themselves run in tests/container/test_kubelet.py."""

from __future__ import annotations

import copy
import re
import shlex
from collections.abc import Callable
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from helm_chart import CHART, CI_VALUES, Manifest, container, env, kinds, merge, notes, one, render, values_file
from scorer import __version__

pytestmark = pytest.mark.fast

# The oldest Kubernetes the chart supports (Chart.yaml's kubeVersion: preStop `sleep` and podFailurePolicy
# are on by default from 1.30) and the newest whose schemas kubernetes-validate ships.
KUBE_VERSIONS = ("1.30", kubernetes_validate.latest_version())


def validate(obj: Manifest) -> None:
    """``obj`` against the strict OpenAPI schema of its kind in every version of KUBE_VERSIONS (the
    ServiceMonitor, a custom resource, against its CRD's schema)."""
    if obj["apiVersion"] == "monitoring.coreos.com/v1":
        validate_service_monitor(obj)
        return
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            raise AssertionError(f"{obj['kind']}/{obj['metadata']['name']} invalid in Kubernetes {version}: "
                                 f"{where}: {exc.message}") from None


# The ServiceMonitor is a custom resource: its schema is the Prometheus Operator's CRD, which no package
# installable here ships in a usable form (the CRD lives in the operator's repository and Helm chart;
# the generated Python models on PyPI accept unknown fields). So it is checked against this strict
# subset of the CRD's schema (monitoring.coreos.com/v1, as of operator 0.84): exactly the fields the
# chart writes, with the CRD's types, required keys and its Duration pattern; anything else fails.
_STRING = {"type": "string"}
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
SERVICE_MONITOR_SUBSET = {
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "additionalProperties": False, "required": ["name"],
                     "properties": {"name": _STRING, "labels": _LABELS}},
        "spec": {"type": "object", "additionalProperties": False, "required": ["selector", "endpoints"], "properties": {
            "selector": {"type": "object", "additionalProperties": False, "properties": {"matchLabels": _LABELS}},
            "endpoints": {"type": "array", "minItems": 1, "items": {
                "type": "object", "additionalProperties": False, "properties": {
                    "port": _STRING,
                    "path": _STRING,
                    "interval": {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?"
                                                              r"(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                    "authorization": {"type": "object", "additionalProperties": False, "properties": {
                        "type": _STRING,
                        "credentials": {"type": "object", "additionalProperties": False, "required": ["key"],
                                        "properties": {"name": _STRING, "key": _STRING, "optional": {"type": "boolean"}}},
                    }},
                }}},
        }},
    },
}


def validate_service_monitor(obj: Manifest) -> None:
    errors = sorted(jsonschema.Draft202012Validator(SERVICE_MONITOR_SUBSET).iter_errors(obj), key=str)
    assert not errors, "ServiceMonitor: " + "; ".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_service_monitor_check_refuses_an_unknown_field() -> None:
    """The ServiceMonitor check is strict: a misspelt endpoint field fails it."""
    monitor = one(render(values_file("hpa-pdb-values.yaml")), "ServiceMonitor")
    validate_service_monitor(monitor)
    monitor["spec"]["endpoints"][0]["scrapeInterval"] = "30s"
    with pytest.raises(AssertionError, match="scrapeInterval"):
        validate_service_monitor(monitor)


# --- the chart's policy ------------------------------------------------------------------------------

def pod_templates(objects: list[Manifest]) -> list[tuple[Manifest, dict[str, Any]]]:
    return [(o, o["spec"]["template"]["spec"]) for o in objects if o["kind"] in ("Deployment", "Job")]


def policy_problems(objects: list[Manifest]) -> list[str]:
    """What in the pods of ``objects`` breaks the chart's policy, one line each (empty: nothing)."""
    problems: list[str] = []
    for workload, pod in pod_templates(objects):
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        pod_sc = pod.get("securityContext", {})
        if pod.get("enableServiceLinks") is not False:
            problems.append(f"{where}: enableServiceLinks is not false (a Service `scorer` would inject SCORER_PORT=tcp://...)")
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: a service account token is mounted")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            sc = c.get("securityContext", {})
            name = f"{where}: container {c['name']}"
            if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
                problems.append(f"{name}: runAsNonRoot is not true")
            if sc.get("runAsUser", pod_sc.get("runAsUser")) in (None, 0):
                problems.append(f"{name}: no non-zero runAsUser")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{name}: readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{name}: allowPrivilegeEscalation is not false")
            caps = sc.get("capabilities", {})
            if "ALL" not in caps.get("drop", []) or caps.get("add"):
                problems.append(f"{name}: capabilities are not all dropped")
            if sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type") != "RuntimeDefault":
                problems.append(f"{name}: seccompProfile is not RuntimeDefault")
            limits = c.get("resources", {}).get("limits", {})
            for resource in ("cpu", "memory"):
                if resource not in limits:
                    problems.append(f"{name}: no {resource} limit")
            tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            if not tmp or "emptyDir" not in volumes.get(tmp[0]["name"], {}):
                problems.append(f"{name}: /tmp is not an emptyDir")
            if workload["kind"] == "Deployment":
                problems += serving_problems(name, pod, c)
    return problems


def serving_problems(name: str, pod: dict[str, Any], c: dict[str, Any]) -> list[str]:
    """A serving container: its probes, and a termination that never cuts a request short."""
    problems: list[str] = []
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    settings = {e["name"]: e.get("value") for e in c.get("env", [])}
    for probe, path in (("startupProbe", "/ready"), ("readinessProbe", "/ready"), ("livenessProbe", "/health")):
        get = c.get(probe, {}).get("httpGet", {})
        if get.get("path") != path:
            problems.append(f"{name}: no {probe} on {path}")
        elif ports.get(get.get("port"), get.get("port")) != int(settings.get("SCORER_PORT", 8080)):
            problems.append(f"{name}: {probe} is not on the server's port")
    startup = c.get("startupProbe", {})
    if startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3) < 120:
        problems.append(f"{name}: the startupProbe allows less than 120 s (a Spark ML bundle on the JVM)")
    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    if not pre_stop:
        problems.append(f"{name}: no preStop pause (endpoints are removed while it runs)")
    needed = pre_stop + float(settings.get("SCORER_DRAIN_S") or 5) + float(settings.get("SCORER_SHUTDOWN_GRACE_S") or 30)
    if pod.get("terminationGracePeriodSeconds", 30) <= needed:
        problems.append(f"{name}: terminationGracePeriodSeconds {pod.get('terminationGracePeriodSeconds', 30)} "
                        f"is not above preStop + drain + shutdown grace ({needed:g})")
    return problems


# --- the matrix --------------------------------------------------------------------------------------

def serving_defaults(objects: list[Manifest]) -> None:
    assert kinds(objects) == ["Deployment", "Service", "ServiceAccount"]
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert container(deployment)["image"] == f"scorer:{__version__}"
    assert container(deployment)["args"] == ["serve"]
    # No source named: the image's own bundle (/model, else its embedded example), no token.
    assert "SCORER_BUNDLE" not in env(deployment) and "SCORER_AUTH_TOKEN" not in env(deployment)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "8080"
    assert one(objects, "Service")["spec"]["ports"][0]["targetPort"] == "http"


def pvc_bundle(objects: list[Manifest]) -> None:
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert {"name": "bundles", "persistentVolumeClaim": {"claimName": "scorer-bundles", "readOnly": True}} in pod["volumes"]
    assert {"name": "bundles", "mountPath": "/bundles", "readOnly": True} in container(deployment)["volumeMounts"]
    assert env(deployment)["SCORER_BUNDLE"] == "/bundles/current"
    assert env(deployment)["SCORER_AUTH_TOKEN"] == {"secretKeyRef": {"name": "scorer-auth", "key": "token"}}
    assert "Secret" not in kinds(objects)  # the Secret is the operator's


def baked_image(objects: list[Manifest]) -> None:
    deployment = one(objects, "Deployment")
    assert container(deployment)["image"] == "spam-scorer:1"
    assert env(deployment)["SCORER_BUNDLE"] == "/model"
    assert [v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]] == ["tmp"]
    secret = one(objects, "Secret")  # the inline token, kept in a Secret the chart makes
    assert env(deployment)["SCORER_AUTH_TOKEN"] == {"secretKeyRef": {"name": secret["metadata"]["name"], "key": "token"}}
    assert "change-me" not in yaml.safe_dump(deployment)


def mlflow_source(objects: list[Manifest]) -> None:
    deployment = one(objects, "Deployment")
    assert env(deployment)["SCORER_BUNDLE"] == "models:/spam@champion"
    assert env(deployment)["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env(deployment)["SCORER_RELOAD_INTERVAL"] == "30"  # the alias followed, no restart
    assert container(deployment)["envFrom"] == [{"secretRef": {"name": "mlflow-credentials"}}]


def hpa_pdb(objects: list[Manifest]) -> None:
    assert kinds(objects) == ["Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service",
                              "ServiceAccount", "ServiceMonitor"]
    deployment = one(objects, "Deployment")
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    hpa = one(objects, "HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    monitor = one(objects, "ServiceMonitor")["spec"]
    assert monitor["selector"]["matchLabels"] == selector
    assert monitor["endpoints"][0]["authorization"]["credentials"] == {"name": "scorer-auth", "key": "token"}
    assert "prometheus.io/scrape" not in deployment["spec"]["template"]["metadata"].get("annotations", {})


def batch_job(objects: list[Manifest]) -> None:
    assert kinds(objects) == ["Job", "ServiceAccount"]
    job = one(objects, "Job")
    assert "completionMode" not in job["spec"] and job["spec"]["completions"] == 1
    assert container(job)["args"] == ["batch", "--input", "/data/in/incoming", "--output", "/data/out/scored"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert env(job)["SCORER_BUNDLE"] == "/bundles/spam"


def indexed_job(objects: list[Manifest]) -> None:
    job = one(objects, "Job")
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    assert container(job)["args"] == ["batch", "--input", "/data/in/incoming", "--output", "/data/out/scored",
                                      "--shard-count", "3", "--output-format", "parquet"]
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data-out"]["persistentVolumeClaim"] == {"claimName": "data-out"}


MATRIX: dict[str, Callable[[list[Manifest]], None]] = {
    "defaults-values.yaml": serving_defaults,
    "pvc-bundle-values.yaml": pvc_bundle,
    "baked-image-values.yaml": baked_image,
    "mlflow-values.yaml": mlflow_source,
    "hpa-pdb-values.yaml": hpa_pdb,
    "batch-job-values.yaml": batch_job,
    "indexed-job-values.yaml": indexed_job,
}


def test_the_matrix_is_every_values_file() -> None:
    """Each values file under charts/scorer/ci is in the matrix below (and so rendered and checked)."""
    assert sorted(p.name for p in CI_VALUES.glob("*.yaml")) == sorted(MATRIX)


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_values_file_renders_valid_objects(name: str) -> None:
    """The values file renders; every object is valid (strict schemas of each Kubernetes version), every
    pod meets the policy, and the objects are what the file asks for."""
    objects = render(values_file(name))
    for obj in objects:
        validate(obj)
    assert policy_problems(objects) == []
    MATRIX[name](objects)


def test_lint_is_clean_for_kubernetes_1_30() -> None:
    """`helm lint --strict --kube-version v1.30.0` (Chart.yaml, the schema, every values file): no finding."""
    for name in sorted(MATRIX):
        report = helm.lint(CHART, values_file(name), strict=True, kube_version="v1.30.0")
        findings = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert not findings, (name, findings)


def test_app_version_is_the_scorer_version() -> None:
    """Chart.yaml's appVersion is the package's version: the image tag a default install runs."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
    assert chart["kubeVersion"] == ">=1.30.0-0"


def test_termination_grace_follows_the_shutdown_settings() -> None:
    """terminationGracePeriodSeconds defaults to preStop + drain + shutdown grace + 5 s, whatever they are."""
    objects = render({"preStopSleepSeconds": 3, "server": {"drainSeconds": 4, "shutdownGraceSeconds": 50}})
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 3 + 4 + 50 + 5
    assert env(one(objects, "Deployment"))["SCORER_SHUTDOWN_GRACE_S"] == "50"
    assert policy_problems(objects) == []


def test_notes_say_where_the_bundle_comes_from() -> None:
    assert "models:/spam@champion from http://mlflow:5000" in notes(values_file("mlflow-values.yaml"))
    text = notes(values_file("pvc-bundle-values.yaml"))  # a token, and scrape annotations (the default)
    assert "claim scorer-bundles, /bundles/current" in text and "needs the auth token" in text


@pytest.mark.parametrize("mutate, expected", [
    (lambda c, p: c["securityContext"].pop("readOnlyRootFilesystem"), "readOnlyRootFilesystem is not true"),
    (lambda c, p: c["securityContext"]["capabilities"].update(drop=["NET_RAW"]), "capabilities are not all dropped"),
    (lambda c, p: c["resources"]["limits"].pop("cpu"), "no cpu limit"),
    (lambda c, p: c.pop("readinessProbe"), "no readinessProbe on /ready"),
    (lambda c, p: c["securityContext"].update(runAsNonRoot=False), "runAsNonRoot is not true"),
    (lambda c, p: p["securityContext"].update(seccompProfile={"type": "Unconfined"}), "seccompProfile is not RuntimeDefault"),
    (lambda c, p: p.update(terminationGracePeriodSeconds=30), "terminationGracePeriodSeconds 30 is not above"),
    (lambda c, p: p.pop("enableServiceLinks"), "enableServiceLinks is not false"),
])
def test_policy_check_catches_a_violation(mutate: Callable[[dict[str, Any], dict[str, Any]], object], expected: str) -> None:
    """The policy check is not vacuous: one change to a rendered pod is reported, naming what broke."""
    objects = copy.deepcopy(render({}))
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    mutate(pod["containers"][0], pod)
    problems = policy_problems(objects)
    assert len(problems) == 1 and expected in problems[0], problems


# --- values the chart refuses ------------------------------------------------------------------------

BAD_VALUES = {
    "two bundle sources": (
        {"bundle": {"pvc": {"claimName": "bundles"}, "registry": {"uri": "models:/spam/1", "trackingUri": "http://mlflow:5000"}}},
        ["bundle.pvc.claimName", "bundle.registry.uri"]),
    "two bundle sources (image and pvc)": (
        {"bundle": {"pvc": {"claimName": "bundles"}, "image": {"path": "/model"}}},
        ["bundle.pvc.claimName", "bundle.image.path"]),
    "HPA with a replica count above its maximum": (
        {"replicas": 8, "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 4}},
        ["replicas (8)", "autoscaling.minReplicas", "autoscaling.maxReplicas", "(2..4)"]),
    "HPA with a minimum above its maximum": (
        {"replicas": None, "autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3}},
        ["autoscaling.minReplicas (5)", "autoscaling.maxReplicas (3)"]),
    "a token inline and from a Secret": (
        {"auth": {"token": "t0ken", "existingSecret": "scorer-auth"}},
        ["auth.token", "auth.existingSecret"]),
    "a grace period the shutdown does not fit in": (
        {"terminationGracePeriodSeconds": 20},
        ["terminationGracePeriodSeconds (20)", "preStopSleepSeconds", "server.drainSeconds", "server.shutdownGraceSeconds"]),
    "a registry source without a tracking server": (
        {"bundle": {"registry": {"uri": "models:/spam@champion"}}},
        ["bundle.registry.uri", "bundle.registry.trackingUri"]),
    "a batch Job without an output claim": (
        {"mode": "batch", "batch": {"input": {"claimName": "data"}}},
        ["batch.output.claimName"]),
    # What the schema states (values.schema.json): an unknown key, a wrong type, a missing limit.
    "an unknown key (a typo)": ({"replica": 3}, ["replica"]),
    "a mode the chart does not have": ({"mode": "stream"}, ["mode"]),
    "no memory limit": ({"resources": {"limits": {"memory": None}}}, ["limits", "memory"]),
    "a registry URI of another form": ({"bundle": {"registry": {"uri": "s3://bucket/model"}}}, ["uri"]),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_contradictory_values_fail_at_render_naming_the_keys(case: str) -> None:
    """helm install refuses the values before anything is applied, with a message naming the keys."""
    values, words = BAD_VALUES[case]
    with pytest.raises(helm.HelmError) as failure:
        render(values)
    message = str(failure.value)
    missing = [w for w in words if w not in message]
    assert not missing, f"{case}: {missing} not named in: {message}"


def test_a_values_file_turned_bad_fails_too() -> None:
    """The check is on the values as merged: a good values file plus one contradictory --set fails."""
    values = values_file("pvc-bundle-values.yaml")
    values["auth"] = {**values["auth"], "token": "inline"}
    with pytest.raises(helm.HelmError, match=re.escape("auth.token and auth.existingSecret")):
        render(values)


# --- the README's commands ---------------------------------------------------------------------------

def readme_helm_installs() -> list[str]:
    """The `helm install` commands of the README's Kubernetes section (continuation lines joined)."""
    text = (CHART.parent.parent / "README.md").read_text()
    section = text.split("\n## Kubernetes\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        commands += [line.strip() for line in block.replace("\\\n", " ").splitlines()
                     if line.strip().startswith("helm install")]
    return commands


def test_readme_helm_install_commands_render_valid_objects() -> None:
    """Each `helm install` of the README (its --set and -f values as Helm parses them) renders objects that
    validate and meet the policy."""
    commands = readme_helm_installs()
    assert len(commands) == 6, commands
    spark = next(c for c in commands if "scorer-spark" in c)
    assert "SCORER_SPARK_SCORING" in spark
    for command in commands:
        words = shlex.split(command)
        assert words[:2] == ["helm", "install"] and words[3] == "charts/scorer", command
        helm.validate_release_name(words[2])
        values: dict[str, Any] = {}
        rest = iter(words[4:])
        for word in rest:
            if word == "--set":
                values = merge(values, helm.parse_set_string(next(rest)))
            elif word == "-f":
                values = merge(values, yaml.safe_load((CHART.parent.parent / next(rest)).read_text()))
            else:
                raise AssertionError(f"{command}: {word!r} is not read by this test")
        objects = render(values, release=words[2])
        for obj in objects:
            validate(obj)
        assert policy_problems(objects) == [], command
