"""A kubelet stand-in for tests: the pods of rendered Deployments and Jobs run as containers on the real
Docker engine, with exactly what their pod spec says, so a test proves the chart's pods, not a hand-written
`docker run`. Test code, not a product feature.

What it does with a pod spec (anything else in it that would change how the container runs is refused
with :class:`Unsupported`, never silently dropped):

- ``image``: the local image of that name (nothing is pulled). ``command`` replaces the image's
  ENTRYPOINT and drops its CMD, ``args`` replaces CMD, as in Kubernetes; ``$(VAR)`` references are refused.
- ``env``: ``value``, ``valueFrom.secretKeyRef``, ``valueFrom.fieldRef`` (``metadata.name``,
  ``metadata.namespace``) and ``envFrom`` (``secretRef``, ``configMapRef``), read from the Secrets and
  ConfigMaps among the objects given; unless ``enableServiceLinks: false``, the variables Kubernetes
  injects for every Service of the namespace (``NAME_SERVICE_HOST``, ``NAME_PORT=tcp://...``, ...; the
  cluster IP is a stand-in, 127.0.0.1), lowest precedence first: Service links, envFrom, env.
- ``volumes``: a ``persistentVolumeClaim`` is a bind mount of the host directory the test maps the claim
  to (read-only if the mount or the volume says so); an ``emptyDir`` is a tmpfs of its ``sizeLimit``
  with exec allowed, as an emptyDir is (whatever its ``medium``; the engine gives it the mode of the
  image's directory, 1777 for /tmp, where a disk-backed emptyDir is 0777 without the sticky bit).
- ``securityContext`` (pod, then container): ``runAsUser``/``runAsGroup`` -> ``--user``;
  ``runAsNonRoot`` -> the container is refused if it would run as uid 0 or as a non-numeric user (the
  kubelet's CreateContainerConfigError); ``readOnlyRootFilesystem`` -> ``--read-only``; ``capabilities``
  -> ``--cap-drop``/``--cap-add``; ``allowPrivilegeEscalation: false`` -> ``no-new-privileges``;
  ``seccompProfile: RuntimeDefault`` -> the engine's default profile; ``supplementalGroups``/``fsGroup``
  -> ``--group-add``.
- ``resources``: ``limits.cpu`` -> ``--cpus`` (the CFS quota the kubelet sets), ``limits.memory`` ->
  ``--memory``, ``requests.cpu`` -> ``--cpu-shares`` (1024 per core, as the kubelet's cpu.shares).
- ``ports``: each ``containerPort`` is published on 127.0.0.1 (the pod IP's stand-in), where the probes
  and the test's load balancer reach it.
- probes (``httpGet``): a thread per probe with its path, port, ``initialDelaySeconds``,
  ``periodSeconds``, ``timeoutSeconds``, ``successThreshold`` and ``failureThreshold``; readiness and
  liveness wait for the startup probe; a failed startup or liveness probe restarts the container (at
  once: no CrashLoopBackOff delay).
- termination: the pod leaves its Service's endpoints, ``lifecycle.preStop`` runs (``sleep``, ``exec``),
  then SIGTERM to PID 1, then SIGKILL once ``terminationGracePeriodSeconds`` (counted from the deletion,
  preStop included) are over.
- controllers: a Deployment's rolling update (``maxSurge`` new pods, each Ready before an old one is
  deleted; ``maxUnavailable: 0`` only); a Job's ``completions``, ``parallelism``, ``completionMode:
  Indexed`` (``JOB_COMPLETION_INDEX`` and the index annotation, hostname ``<job>-<index>``),
  ``backoffLimit`` and ``podFailurePolicy`` rules ``FailJob`` on exit codes.

What a real kubelet (and the control plane around it) does that this does not: no scheduler, nodes,
pod sandbox or pod network (each pod is one container on Docker's bridge network, reached through
127.0.0.1 ports; no cluster IP or DNS); kube-proxy and the endpoints controller are the test's
:class:`LoadBalancer`, told by the harness, with a fixed lag for removals (``endpoint_lag_s``) instead
of watch latency; memory requests, QoS classes, eviction and ephemeral-storage accounting are not
modelled (a tmpfs's size is its only bound, and an emptyDir's contents do not survive a container
restart here); no image pulls or pull secrets, no service account token, no ConfigMap, Secret,
projected or downward API volumes, no init or sidecar containers (all refused), no ``fsGroup``
ownership change of volumes; an exited serving container is not restarted (the test sees it exit).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import requests
from docker.errors import APIError
from docker.models.containers import Container
from docker.types import Mount

Manifest = dict[str, Any]
CLUSTER_IP = "127.0.0.1"  # the stand-in for a Service's cluster IP in Service-link variables

# Pod spec fields that do not change how the container runs on one node (scheduling, identity,
# API access): read by nothing here.
_NOT_MODELLED = {"serviceAccountName", "automountServiceAccountToken", "imagePullSecrets", "nodeSelector",
                 "affinity", "tolerations", "topologySpreadConstraints", "priorityClassName"}
_POD_FIELDS = {"containers", "volumes", "securityContext", "enableServiceLinks", "restartPolicy",
               "terminationGracePeriodSeconds", "hostname"} | _NOT_MODELLED
_CONTAINER_FIELDS = {"name", "image", "imagePullPolicy", "command", "args", "env", "envFrom", "ports",
                     "volumeMounts", "securityContext", "resources", "startupProbe", "readinessProbe",
                     "livenessProbe", "lifecycle"}

_POD_SECURITY = {"runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile", "supplementalGroups", "fsGroup"}
_CONTAINER_SECURITY = {"runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile", "readOnlyRootFilesystem",
                       "allowPrivilegeEscalation", "capabilities", "privileged"}


class Unsupported(Exception):
    """The pod spec asks for something this harness does not do (so it would not run as written)."""


class ContainerConfigError(Exception):
    """The kubelet would refuse to start the container (CreateContainerConfigError)."""


_SUFFIXES = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30,
             "Ti": 2**40}


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity as a number: ``"500m"`` -> 0.5, ``"1Gi"`` -> 1073741824."""
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    if not match or (match[2] and match[2] not in _SUFFIXES):
        raise Unsupported(f"quantity {value!r}")
    return float(match[1]) * _SUFFIXES.get(match[2], 1)


class Cluster:
    """One namespace: the objects given (rendered manifests, the test's Secrets), the host directories
    that stand for PersistentVolumeClaims, and the Docker engine the pods run on. Containers are named
    ``<prefix>-<pod>`` and labelled, so :meth:`close` removes every one it made."""

    def __init__(self, objects: list[Manifest], *, claims: dict[str, Path] | None = None,
                 namespace: str = "default", prefix: str = "kubelet") -> None:
        self.objects = list(objects)
        self.claims = dict(claims or {})
        self.namespace = namespace
        self.prefix = prefix
        self.docker = docker.from_env()
        self.label = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.pods: list[Pod] = []  # every pod started here

    def get(self, kind: str, name: str) -> Manifest:
        for obj in self.objects:
            if obj["kind"] == kind and obj["metadata"]["name"] == name:
                return obj
        raise ContainerConfigError(f"{kind} {name!r} not found")

    def close(self) -> None:
        for pod in self.pods:
            pod.stop_probes()
        for c in self.docker.containers.list(all=True, filters={"label": f"kubelet-harness={self.label}"}):
            c.remove(force=True)
        self.docker.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- what a container is given -----------------------------------------------------------------

    def secret_data(self, name: str) -> dict[str, str]:
        secret = self.get("Secret", name)
        data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        return {**data, **(secret.get("stringData") or {})}

    def config_map_data(self, name: str) -> dict[str, str]:
        return dict(self.get("ConfigMap", name).get("data") or {})

    def service_links(self) -> dict[str, str]:
        """The variables the kubelet injects for each Service (pkg/kubelet/envvars), ``kubernetes`` too."""
        services = [o for o in self.objects if o["kind"] == "Service"]
        services.append({"metadata": {"name": "kubernetes"}, "spec": {"ports": [{"name": "https", "port": 443}]}})
        env: dict[str, str] = {}
        for service in services:
            prefix = service["metadata"]["name"].upper().replace("-", "_")
            ports = service["spec"]["ports"]
            env[f"{prefix}_SERVICE_HOST"] = CLUSTER_IP
            env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
            for port in ports:
                if port.get("name"):
                    env[f"{prefix}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(port["port"])
            protocol = ports[0].get("protocol", "TCP").lower()
            env[f"{prefix}_PORT"] = f"{protocol}://{CLUSTER_IP}:{ports[0]['port']}"
            for port in ports:
                proto = port.get("protocol", "TCP")
                base = f"{prefix}_PORT_{port['port']}_{proto}"
                env[base] = f"{proto.lower()}://{CLUSTER_IP}:{port['port']}"
                env[base + "_PROTO"] = proto.lower()
                env[base + "_PORT"] = str(port["port"])
                env[base + "_ADDR"] = CLUSTER_IP
        return env

    def environment(self, pod: Manifest, spec: dict[str, Any], c: dict[str, Any]) -> dict[str, str]:
        env = self.service_links() if spec.get("enableServiceLinks", True) else {}
        for source in c.get("envFrom", []):
            if "secretRef" in source:
                data = self.secret_data(source["secretRef"]["name"])
            elif "configMapRef" in source:
                data = self.config_map_data(source["configMapRef"]["name"])
            else:
                raise Unsupported(f"envFrom {source}")
            env.update({source.get("prefix", "") + k: v for k, v in data.items()})
        for var in c.get("env", []):
            if "value" in var or "valueFrom" not in var:
                value = str(var.get("value", ""))
                if "$(" in value:
                    raise Unsupported(f"env {var['name']}: $(VAR) references are not expanded here")
                env[var["name"]] = value
                continue
            ref = var["valueFrom"]
            if "secretKeyRef" in ref:
                key = ref["secretKeyRef"]
                env[var["name"]] = self.secret_data(key["name"])[key["key"]]
            elif "fieldRef" in ref:
                path = ref["fieldRef"]["fieldPath"]
                meta = pod["metadata"]
                fields = {"metadata.name": meta["name"], "metadata.namespace": self.namespace}
                for k, v in (meta.get("annotations") or {}).items():
                    fields[f"metadata.annotations['{k}']"] = v
                if path not in fields:
                    raise Unsupported(f"env {var['name']}: fieldRef {path}")
                env[var["name"]] = fields[path]
            else:
                raise Unsupported(f"env {var['name']}: {ref}")
        return env

    def image_user(self, image: str) -> str:
        return self.docker.images.get(image).attrs["Config"].get("User") or "0"

    def container_kwargs(self, pod: Manifest, c: dict[str, Any]) -> dict[str, Any]:
        """The ``docker create`` arguments for container ``c`` of ``pod`` (a pod manifest)."""
        spec = pod["spec"]
        extra = set(spec) - _POD_FIELDS
        if extra:
            raise Unsupported(f"pod spec fields {sorted(extra)}")
        extra = set(c) - _CONTAINER_FIELDS
        if extra:
            raise Unsupported(f"container fields {sorted(extra)}")
        kwargs: dict[str, Any] = {"image": c["image"], "hostname": pod["spec"].get("hostname", pod["metadata"]["name"]),
                                  "name": f"{self.prefix}-{pod['metadata']['name']}-{uuid.uuid4().hex[:4]}",
                                  "labels": {"kubelet-harness": self.label}}
        words = [*c.get("command", []), *c.get("args", [])]
        if any("$(" in w for w in words):
            raise Unsupported("$(VAR) references in command or args are not expanded here")
        if "command" in c:  # replaces ENTRYPOINT; CMD goes too (args, if any, take its place)
            kwargs["entrypoint"] = c["command"]
            kwargs["command"] = c.get("args", [])
        elif "args" in c:
            kwargs["command"] = c["args"]
        kwargs["environment"] = self.environment(pod, spec, c)

        pod_sc, sc = spec.get("securityContext", {}), c.get("securityContext", {})
        extra = (set(pod_sc) - _POD_SECURITY) | (set(sc) - _CONTAINER_SECURITY)
        if extra:
            raise Unsupported(f"securityContext fields {sorted(extra)}")
        merged = {**pod_sc, **sc}
        uid = merged.get("runAsUser")
        user = str(uid) if uid is not None else self.image_user(c["image"]).split(":")[0]
        if merged.get("runAsNonRoot"):
            if not user.isdigit():
                raise ContainerConfigError(f"runAsNonRoot and the image's user {user!r} is not numeric")
            if int(user) == 0:
                raise ContainerConfigError("runAsNonRoot and the container would run as root (uid 0)")
        if uid is not None:
            kwargs["user"] = f"{uid}:{merged['runAsGroup']}" if "runAsGroup" in merged else str(uid)
        groups = [*pod_sc.get("supplementalGroups", []), *([pod_sc["fsGroup"]] if "fsGroup" in pod_sc else [])]
        if groups:
            kwargs["group_add"] = [str(g) for g in groups]
        kwargs["read_only"] = bool(sc.get("readOnlyRootFilesystem"))
        caps = sc.get("capabilities", {})
        kwargs["cap_drop"] = list(caps.get("drop", []))
        kwargs["cap_add"] = list(caps.get("add", []))
        security_opt = []
        if sc.get("allowPrivilegeEscalation") is False:
            security_opt.append("no-new-privileges")
        seccomp = merged.get("seccompProfile", {}).get("type", "RuntimeDefault")
        if seccomp == "Unconfined":
            security_opt.append("seccomp=unconfined")
        elif seccomp != "RuntimeDefault":
            raise Unsupported(f"seccompProfile {seccomp}")
        kwargs["security_opt"] = security_opt
        kwargs["privileged"] = bool(sc.get("privileged"))

        resources = c.get("resources", {})
        limits, requests_ = resources.get("limits", {}), resources.get("requests", {})
        if "cpu" in limits:
            kwargs["nano_cpus"] = int(quantity(limits["cpu"]) * 1e9)
        if "memory" in limits:
            kwargs["mem_limit"] = int(quantity(limits["memory"]))
        if "cpu" in requests_:
            kwargs["cpu_shares"] = max(2, int(quantity(requests_["cpu"]) * 1024))

        kwargs["ports"] = {f"{p['containerPort']}/{p.get('protocol', 'TCP').lower()}": ("127.0.0.1", None)
                           for p in c.get("ports", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        mounts, tmpfs = [], {}
        for m in c.get("volumeMounts", []):
            volume = volumes[m["name"]]
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]
                if claim["claimName"] not in self.claims:
                    raise ContainerConfigError(f"claim {claim['claimName']!r}: no directory stands for it")
                source = self.claims[claim["claimName"]] / m.get("subPath", "")
                read_only = bool(m.get("readOnly") or claim.get("readOnly"))
                mounts.append(Mount(target=m["mountPath"], source=str(source), type="bind", read_only=read_only))
            elif "emptyDir" in volume:
                if m.get("subPath"):
                    raise Unsupported("subPath of an emptyDir")
                size = volume["emptyDir"].get("sizeLimit")
                options = ["exec"] + ([f"size={int(quantity(size))}"] if size else [])
                tmpfs[m["mountPath"]] = ",".join(options)
            else:
                raise Unsupported(f"volume {m['name']}: {sorted(set(volume) - {'name'})}")
        kwargs["mounts"], kwargs["tmpfs"] = mounts, tmpfs
        return kwargs


# --- pods --------------------------------------------------------------------------------------------

@dataclass
class Termination:
    exit_code: int
    seconds: float  # from the deletion to the exit
    killed: bool  # SIGKILL at the end of the grace period


class Pod:
    """One pod (its single container) with its probes. ``ready``: the readiness the kubelet reports."""

    def __init__(self, cluster: Cluster, manifest: Manifest) -> None:
        self.cluster = cluster
        self.manifest = manifest
        self.name = manifest["metadata"]["name"]
        spec = manifest["spec"]
        if len(spec["containers"]) != 1:
            raise Unsupported("pods of one container only")
        self.spec = spec
        self.c = spec["containers"][0]
        self.container: Container = cluster.docker.containers.create(**cluster.container_kwargs(manifest, self.c))
        cluster.pods.append(self)
        self.started = threading.Event()
        self.ready = False
        self.started_at = self.ready_at = self.deleted_at = 0.0
        self.restarts = 0
        self.probe_log: list[tuple[float, str, bool]] = []
        self._stop = threading.Event()
        self._probers: list[threading.Thread] = []

    def start(self) -> Pod:
        self.container.start()
        self.started_at = time.monotonic()
        self.container.reload()
        if not self.c.get("startupProbe"):
            self.started.set()
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            if kind in self.c:
                thread = threading.Thread(target=self._probe_loop, args=(kind, self.c[kind]), daemon=True,
                                          name=f"{self.name}-{kind}")
                thread.start()
                self._probers.append(thread)
        if "readinessProbe" not in self.c:
            self.ready = True
        return self

    def port(self, name_or_number: str | int) -> int:
        """The 127.0.0.1 port a containerPort (by number or name) is published on."""
        number = next((p["containerPort"] for p in self.c.get("ports", []) if p.get("name") == name_or_number),
                      name_or_number)
        binding = self.container.ports.get(f"{number}/tcp")
        if not binding:
            raise Unsupported(f"port {name_or_number}: not a containerPort of {self.name}")
        return int(binding[0]["HostPort"])

    def url(self, port: str | int = "http") -> str:
        return f"http://127.0.0.1:{self.port(port)}"

    def _check(self, probe: dict[str, Any]) -> bool:
        if "httpGet" not in probe:
            raise Unsupported(f"probe {sorted(probe)}: httpGet only")
        get = probe["httpGet"]
        try:
            answer = requests.get(self.url(get["port"]) + get.get("path", "/"), timeout=probe.get("timeoutSeconds", 1))
            return 200 <= answer.status_code < 400
        except requests.RequestException:
            return False

    def _probe_loop(self, kind: str, probe: dict[str, Any]) -> None:
        period = probe.get("periodSeconds", 10)
        failures = successes = 0
        if self._stop.wait(probe.get("initialDelaySeconds", 0)):
            return
        while not self._stop.is_set():
            if kind == "startupProbe" and self.started.is_set():
                return
            if kind == "startupProbe" or self.started.is_set():
                ok = self._check(probe)
                self.probe_log.append((time.monotonic(), kind, ok))
                successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
                if kind == "startupProbe" and ok:
                    self.started.set()
                    return
                if kind == "readinessProbe":
                    if ok and successes >= probe.get("successThreshold", 1) and not self.ready:
                        self.ready, self.ready_at = True, time.monotonic()
                    elif failures >= probe.get("failureThreshold", 3):
                        self.ready = False
                if (kind in ("startupProbe", "livenessProbe") and failures >= probe.get("failureThreshold", 3)
                        and not self.deleted_at):  # a terminating pod is not restarted
                    self._restart(kind)
                    if kind == "startupProbe":
                        return  # the restart starts a new startup prober
                    failures = 0
            if self._stop.wait(period):
                return

    def _restart(self, why: str) -> None:
        """A failed startup or liveness probe: the container is killed (with its grace) and started again."""
        self.ready = False
        self.started.clear()
        self._terminate(time.monotonic())
        self.restarts += 1
        self.container.start()
        self.container.reload()
        if self.c.get("startupProbe"):  # the startup probe runs again for the new container
            threading.Thread(target=self._probe_loop, args=("startupProbe", self.c["startupProbe"]), daemon=True,
                             name=f"{self.name}-startupProbe-{self.restarts}").start()
        else:
            self.started.set()

    def wait_ready(self, timeout: float) -> float:
        """Seconds from the container's start to the kubelet's first Ready (an exited container fails)."""
        deadline = time.monotonic() + timeout
        while not self.ready:
            self.container.reload()
            if self.container.status == "exited":
                raise AssertionError(f"pod {self.name} exited ({self.exit_code()}) before it was ready:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"pod {self.name} not ready after {timeout}s:\n{self.logs()}")
            time.sleep(0.05)
        return self.ready_at - self.started_at

    def delete(self) -> Termination:
        """The pod deleted: out of the endpoints (the load balancer sees it ``endpoint_lag_s`` later),
        preStop, SIGTERM, SIGKILL at the end of the grace period."""
        self.deleted_at = time.monotonic()
        termination = self._terminate(self.deleted_at)
        self._stop.set()
        return termination

    def _terminate(self, since: float) -> Termination:
        grace = float(self.spec.get("terminationGracePeriodSeconds", 30))
        pre_stop = self.c.get("lifecycle", {}).get("preStop")
        if pre_stop:
            if "sleep" in pre_stop:
                time.sleep(min(pre_stop["sleep"]["seconds"], max(0.0, grace - (time.monotonic() - since))))
            elif "exec" in pre_stop:
                runner = threading.Thread(target=self.container.exec_run, args=(pre_stop["exec"]["command"],), daemon=True)
                runner.start()
                runner.join(max(0.0, grace - (time.monotonic() - since)))
            else:
                raise Unsupported(f"preStop {sorted(pre_stop)}")
        try:
            self.container.kill(signal="SIGTERM")
        except APIError:  # it has exited already
            pass
        killed = False
        try:
            result = self.container.wait(timeout=max(0.1, grace - (time.monotonic() - since)))
        except requests.exceptions.RequestException:
            self.container.kill(signal="SIGKILL")
            result, killed = self.container.wait(timeout=30), True
        return Termination(int(result["StatusCode"]), time.monotonic() - since, killed)

    def wait_exit(self, timeout: float) -> int:
        return int(self.container.wait(timeout=timeout)["StatusCode"])

    def exit_code(self) -> int:
        self.container.reload()
        return int(self.container.attrs["State"]["ExitCode"])

    def logs(self) -> str:
        return self.container.logs().decode(errors="replace")

    def stop_probes(self) -> None:
        self._stop.set()


def pod_from_template(owner: Manifest, name: str, *, annotations: dict[str, str] | None = None,
                      env: dict[str, str] | None = None, hostname: str | None = None) -> Manifest:
    """A pod manifest made from a Deployment's or Job's template (as their controllers make them)."""
    template = json.loads(json.dumps(owner["spec"]["template"]))
    meta = template.setdefault("metadata", {})
    meta["name"] = name
    meta["annotations"] = {**(meta.get("annotations") or {}), **(annotations or {})}
    if env:
        for c in template["spec"]["containers"]:
            c["env"] = [*c.get("env", []), *({"name": k, "value": v} for k, v in env.items())]
    if hostname:
        template["spec"]["hostname"] = hostname
    return template


# --- a Deployment and its rolling update ----------------------------------------------------------

class Deployment:
    """A Deployment's pods: created, rolled over to a new template, deleted. ``pods``: the live ones."""

    def __init__(self, cluster: Cluster, manifest: Manifest, *, ready_timeout: float = 120) -> None:
        self.cluster = cluster
        self.manifest = manifest
        self.ready_timeout = ready_timeout
        self.pods: list[Pod] = []
        self.every_pod: list[Pod] = []  # deleted ones too (a load balancer drops them after its lag)
        self.terminations: list[tuple[str, Termination]] = []
        self._deleting: list[threading.Thread] = []

    def _new_pod(self, manifest: Manifest) -> Pod:
        template_hash = hashlib.sha256(json.dumps(manifest["spec"]["template"], sort_keys=True).encode()).hexdigest()[:10]
        name = f"{manifest['metadata']['name']}-{template_hash}-{uuid.uuid4().hex[:5]}"
        pod = Pod(self.cluster, pod_from_template(manifest, name)).start()
        self.every_pod.append(pod)
        return pod

    def create(self) -> list[float]:
        """The first ReplicaSet: every replica started at once; the seconds each took to be Ready."""
        replicas = self.manifest["spec"].get("replicas", 1)
        new = [self._new_pod(self.manifest) for _ in range(replicas)]
        self.pods += new
        return [p.wait_ready(self.ready_timeout) for p in new]

    def _delete_in_background(self, pod: Pod) -> None:
        def run() -> None:
            self.terminations.append((pod.name, pod.delete()))

        thread = threading.Thread(target=run, daemon=True, name=f"delete-{pod.name}")
        thread.start()
        self._deleting.append(thread)

    def roll(self, new_manifest: Manifest) -> None:
        """The rolling update to ``new_manifest``'s template: ``maxSurge`` new pods at a time; each old pod
        is deleted once a new one is Ready (terminating pods do not count against the surge, as in the
        Deployment controller); returns when every new pod is Ready (old ones may still be terminating)."""
        strategy = new_manifest["spec"].get("strategy", {})
        rolling = strategy.get("rollingUpdate", {})
        if strategy.get("type", "RollingUpdate") != "RollingUpdate" or rolling.get("maxUnavailable", 0) not in (0, "0%"):
            raise Unsupported(f"strategy {strategy}: RollingUpdate with maxUnavailable 0 only")
        surge = int(rolling.get("maxSurge", 1))
        old = list(self.pods)
        self.manifest = new_manifest
        while old:
            batch = [self._new_pod(new_manifest) for _ in range(min(surge, len(old)))]
            self.pods += batch
            for pod in batch:
                pod.wait_ready(self.ready_timeout)
                gone = old.pop(0)
                self.pods.remove(gone)
                self._delete_in_background(gone)

    def wait_terminated(self, timeout: float = 120) -> list[tuple[str, Termination]]:
        for thread in self._deleting:
            thread.join(timeout)
        return list(self.terminations)

    def delete(self) -> None:
        for pod in list(self.pods):
            self._delete_in_background(pod)
        self.pods.clear()
        self.wait_terminated()


# --- a Job -------------------------------------------------------------------------------------------

@dataclass
class JobRun:
    succeeded: bool
    seconds: float
    pods: list[tuple[str, int | None, int]] = field(default_factory=list)  # (pod, index, exit code)
    logs: dict[str, str] = field(default_factory=dict)
    reason: str = ""


def run_job(cluster: Cluster, job: Manifest, *, timeout: float = 300) -> JobRun:
    """The Job's pods run to completion as its controller runs them; the run's outcome."""
    spec = job["spec"]
    if spec["template"]["spec"].get("restartPolicy") != "Never":
        raise Unsupported("Jobs with restartPolicy Never only")
    completions, parallelism = spec.get("completions", 1), spec.get("parallelism", 1)
    indexed = spec.get("completionMode", "NonIndexed") == "Indexed"
    fail_codes = [set(rule["onExitCodes"]["values"]) for rule in spec.get("podFailurePolicy", {}).get("rules", [])
                  if rule["action"] == "FailJob" and rule["onExitCodes"].get("operator", "In") == "In"]
    todo: list[int | None] = list(range(completions)) if indexed else [None] * completions
    running: list[tuple[Pod, int | None]] = []
    failures, names = 0, itertools.count()
    result = JobRun(False, 0.0)
    started = time.monotonic()
    try:
        while todo or running:
            while todo and len(running) < parallelism:
                index = todo.pop(0)
                name = f"{job['metadata']['name']}-{index if indexed else next(names)}-{uuid.uuid4().hex[:5]}"
                extra = {"JOB_COMPLETION_INDEX": str(index)} if indexed else None
                annotations = {"batch.kubernetes.io/job-completion-index": str(index)} if indexed else None
                hostname = f"{job['metadata']['name']}-{index}" if indexed else None
                manifest = pod_from_template(job, name, annotations=annotations, env=extra, hostname=hostname)
                running.append((Pod(cluster, manifest).start(), index))
            time.sleep(0.1)
            for pod, index in list(running):
                pod.container.reload()
                if pod.container.status != "exited":
                    continue
                running.remove((pod, index))
                code = pod.exit_code()
                result.pods.append((pod.name, index, code))
                result.logs[pod.name] = pod.logs()
                if code == 0:
                    continue
                failures += 1
                if any(code in codes for codes in fail_codes):
                    result.reason = f"podFailurePolicy FailJob: {pod.name} exited {code}"
                    return result
                if failures > spec.get("backoffLimit", 6):
                    result.reason = f"backoffLimit {spec.get('backoffLimit', 6)} exceeded: {pod.name} exited {code}"
                    return result
                todo.append(index)
            if time.monotonic() - started > timeout:
                result.reason = f"not done after {timeout}s"
                return result
        result.succeeded = True
        return result
    finally:
        result.seconds = time.monotonic() - started
        for pod, _ in running:
            pod.container.kill()


# --- kube-proxy's part -------------------------------------------------------------------------------

class LoadBalancer:
    """A TCP proxy on 127.0.0.1 in front of a Service's endpoints, as kube-proxy is: each new connection
    goes to the next endpoint (round robin) among the pods that are Ready and not deleted more than
    ``endpoint_lag_s`` ago; a connection stays with its pod until one side closes it (conntrack)."""

    def __init__(self, pods: Callable[[], list[Pod]], port: str | int = "http", *, endpoint_lag_s: float = 1.0) -> None:
        self.pods, self.target, self.lag = pods, port, endpoint_lag_s
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections: dict[str, int] = {}
        self.refused = 0
        self._turn = itertools.count()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="load-balancer").start()

    def endpoints(self) -> list[Pod]:
        now = time.monotonic()
        return [p for p in self.pods() if p.ready and not (p.deleted_at and now - p.deleted_at >= self.lag)]

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        endpoints = self.endpoints()
        if not endpoints:
            self.refused += 1
            client.close()
            return
        pod = endpoints[next(self._turn) % len(endpoints)]
        try:
            upstream = socket.create_connection(("127.0.0.1", pod.port(self.target)), timeout=5)
        except OSError:
            self.refused += 1
            client.close()
            return
        upstream.settimeout(None)
        self.connections[pod.name] = self.connections.get(pod.name, 0) + 1
        back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
        back.start()
        _pipe(client, upstream)
        back.join()
        client.close()
        upstream.close()

    def close(self) -> None:
        self._closed = True
        self.listener.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    """Copy ``source`` to ``sink`` until ``source`` ends, then pass the end on (half-close)."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    for sock, how in ((sink, socket.SHUT_WR), (source, socket.SHUT_RD)):
        try:
            sock.shutdown(how)
        except OSError:
            pass
