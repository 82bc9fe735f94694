"""The Spark image as Spark cluster nodes (docker/spark-entrypoint.sh) against a real Docker engine.

**Standalone.** A master and two workers, each a container of the Spark image started with the
image's ``master`` / ``worker`` modes (host network, every address 127.0.0.1; hardened as in
test_spark_image: uid 10001, read-only root, a noexec tmpfs at /tmp, no capabilities). On the host,
``scorer batch --engine spark --spark-master spark://127.0.0.1:PORT`` is the driver (client mode, the
host venv's pyspark; PYSPARK_PYTHON names the image's python, which the executors in the worker
containers run: host and image both have Python 3.11, as PySpark requires). Its rows equal
``--engine local``'s on the same input, every value bit for bit (the files differ by design: Spark
commits part files, the local engine writes one file per input file), and both workers ran executors.
The input and output directories are mounted at the same paths in the workers (a shared file system).

**Kubernetes container contract.** The driver is a container of the image in ``driver`` mode, started
as Spark 3.5's DriverCommandFeatureStep and BasicDriverFeatureStep start a driver pod: args ``driver
--properties-file /opt/spark/conf/spark.properties --class org.apache.spark.deploy.PythonRunner
local:///.../driver.py ARGS``, SPARK_DRIVER_BIND_ADDRESS (the pod IP, 127.0.0.1) and
SPARK_CONF_DIR=/opt/spark/conf holding spark.properties (written here as spark-submit resolves it, with
the standalone master instead of ``k8s://``: its scheduler backend, like Kubernetes', is a
``CoarseGrainedSchedulerBackend``, and it asks for executors larger than any worker, so that the
standalone master starts none). Its application asks Spark's own Kubernetes code for the executor pod
it would create: ``KubernetesExecutorBuilder.buildFromFeatures`` (BasicExecutorFeatureStep,
LocalDirsFeatureStep, the volume steps, ...) and the executor ConfigMap (``KubernetesClientUtils``).
The test runs that pod's one container as a kubelet would: the pod's image with the pod's ``args``
(``["executor"]``, no command, so the image's entrypoint), every env variable of the spec
(``status.podIP`` is 127.0.0.1, the pod's network being the host's; ``metadata.name`` the pod's
name), its emptyDir volumes as tmpfs, the ConfigMap's files at its mount path, its memory limit. The
executor registers with the driver, which then runs Python tasks on it: they run in that container
(they see its SPARK_EXECUTOR_POD_NAME), as uid 10001, on the image's python, with scorer importable;
the driver's stop ends the executor container with 0. Both containers are hardened as above.

What this proves: the image's entrypoint turns exactly what Spark's Kubernetes backend puts in an
executor pod (arguments, environment, volumes) into a working executor, and a driver pod's arguments
into a working client-mode driver. What it cannot prove: no API server, so nothing creates, watches or
deletes pods (spark-submit's KubernetesClientApplication, ExecutorPodsAllocator, the lifecycle
manager, statefulset executor-id allocation), the driver's scheduler backend is the standalone one
rather than KubernetesClusterSchedulerBackend (same registration protocol, its ``GenerateExecID``
unused), the driver pod's spec is written by the test rather than built by Spark, and there is no pod
networking, DNS, driver Service or pod template (everything is on 127.0.0.1).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from spark_cluster import TEST_DEFAULTS, require_spark, spark_env
from testcontainers.core.container import DockerContainer

import scorer

from .conftest import DOCKER, IMAGE_TAG
from .test_image import free_port

IMAGE_PYTHON = "/opt/scorer/bin/python"  # PYSPARK_PYTHON of the image: what its executors must run
TMPFS = "size=256m"  # docker's default options: rw, noexec, nosuid, nodev
MASTER_UP = re.compile(r"Starting Spark master at (spark://127\.0\.0\.1:\d+)")
ROWS = 600


def node(image: str, role: str, *args: str, env: dict[str, str] | None = None, tmpfs: dict[str, str] | None = None,
         volumes: dict[str, tuple[str, str]] | None = None, **kwargs: Any) -> DockerContainer:
    """A container of the Spark image on the host network, hardened (read-only root, noexec tmpfs /tmp,
    no capabilities), without the serving HEALTHCHECK (a Spark node answers no /ping)."""
    container = DockerContainer(image).with_name(f"{IMAGE_TAG}-spark-{role}-{os.getpid()}").with_command(list(args))
    for path, size in (tmpfs or {"/tmp": TMPFS}).items():
        container = container.with_tmpfs_mount(path, size)
    for host, (path, mode) in (volumes or {}).items():
        container = container.with_volume_mapping(host, path, mode)
    for key, value in (env or {}).items():
        container = container.with_env(key, value)
    return container.with_kwargs(network_mode="host", read_only=True, cap_drop=["ALL"],
                                 security_opt=["no-new-privileges"], healthcheck={"test": ["NONE"]}, **kwargs)


def text_of(container: DockerContainer) -> str:
    out, err = container.get_logs()
    return (out + err).decode(errors="replace")


def wait_for(what: str, done: Callable[[], object], containers: list[DockerContainer], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        for c in containers:
            c.get_wrapped_container().reload()
            if c.get_wrapped_container().status == "exited":
                raise AssertionError(f"a node exited while waiting for {what}:\n{text_of(c)[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n" + "\n".join(text_of(c)[-3000:] for c in containers))
        time.sleep(0.2)


@dataclass
class Nodes:
    url: str  # spark://127.0.0.1:<port>
    shared: Path  # mounted at the same path in every worker: the "shared file system"
    master: DockerContainer
    workers: list[DockerContainer]


@pytest.fixture(scope="module")
def nodes(spark_image: dict[str, object]) -> Iterator[Nodes]:
    """A running standalone cluster of Spark-image containers: a master and two workers (1 core, 1 GiB)."""
    require_spark()  # the drivers are the host's pyspark
    image = str(spark_image["name"])
    shared = Path(tempfile.mkdtemp(prefix="scorer-nodes-"))
    shared.chmod(0o777)  # written by the executors (uid 10001) and the driver (this user)
    daemon = {"SPARK_DAEMON_MEMORY": "256m"}
    started: list[DockerContainer] = []
    try:
        master = node(image, "master", "master", "--host", "127.0.0.1", "--port", "0", "--webui-port", "0", env=daemon)
        started.append(master.start())
        wait_for("the master", lambda: MASTER_UP.search(text_of(master)), started, 90)
        found = MASTER_UP.search(text_of(master))
        assert found is not None
        url = found.group(1)
        workers = [node(image, f"worker{i}", "worker", url, "--host", "127.0.0.1", "--port", "0", "--webui-port", "0",
                        "--cores", "1", "--memory", "1g", env=daemon, volumes={str(shared): (str(shared), "rw")})
                   for i in (1, 2)]
        for w in workers:
            started.append(w.start())
        wait_for("two workers to register", lambda: all(
            "Successfully registered with master" in text_of(w) for w in workers), started, 120)
        yield Nodes(url, shared, master, workers)
    finally:
        for c in reversed(started):
            c.stop()
        shutil.rmtree(shared, ignore_errors=True)


def driver_env(conf_dir: Path, defaults: dict[str, str]) -> dict[str, str]:
    """A host driver's environment: loopback, SPARK_CONF_DIR with ``defaults``, executors on the image's python."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "spark-defaults.conf").write_text("".join(f"{k} {v}\n" for k, v in defaults.items()))
    env = spark_env(conf_dir)
    env["PYSPARK_PYTHON"] = IMAGE_PYTHON
    return env


def scored_rows(path: Path) -> pd.DataFrame:
    """Every Parquet data file under ``path`` (one file per input, or Spark's part files) as one frame, by id."""
    files = sorted(p for p in path.rglob("*.parquet") if not p.name.startswith(("_", ".")))
    assert files, f"no Parquet files in {path}"
    return pd.concat([pq.read_table(f).to_pandas() for f in files]).sort_values("id").reset_index(drop=True)


def test_standalone_cluster_of_image_nodes_scores_like_local(nodes: Nodes, example_bundles: dict[str, Path],
                                                             build_module: Any, tmp_path: Path) -> None:
    """`scorer batch --engine spark` on the containers' cluster: the spam bundle (custom code, text) over
    three Parquet files; exit 0, Spark's commit (_SUCCESS, part files), Python workers, executors on both
    workers, and the same rows as `--engine local`, every value bit for bit."""
    frame = build_module.make_spam_frame(ROWS, seed=21).drop(columns=["label"])
    frame.insert(0, "id", [f"m{i:04d}" for i in range(ROWS)])
    source = nodes.shared / "in"
    source.mkdir()
    for i, part in enumerate(np.array_split(np.arange(ROWS), 3)):
        frame.iloc[part].to_parquet(source / f"part{i}.parquet", index=False)
    bundle = example_bundles["spam"]
    base = [sys.executable, "-m", "scorer.cli", "batch", str(bundle), "--input", str(source), "--log-format", "text"]

    local_out = tmp_path / "local"
    local = subprocess.run([*base, "--output", str(local_out), "--workers", "1"], env=spark_env(),
                           capture_output=True, text=True, timeout=300, check=False)
    assert local.returncode == 0, local.stderr[-4000:]

    # The driver runs as this user, the executors as uid 10001: the directories the driver creates for
    # Spark's commit (OUT/_temporary/0) must be writable by the executors, as on a shared volume.
    defaults = {**TEST_DEFAULTS, "spark.hadoop.fs.permissions.umask-mode": "000"}
    env = driver_env(tmp_path / "conf", defaults)
    spark_out = nodes.shared / "out"
    started = time.monotonic()
    run = subprocess.run([*base, "--output", str(spark_out), "--engine", "spark", "--spark-master", nodes.url],
                         env=env, capture_output=True, text=True, timeout=600, check=False)
    seconds = time.monotonic() - started
    logs = run.stderr + run.stdout
    assert run.returncode == 0, logs[-6000:] + "\n".join(text_of(w)[-3000:] for w in nodes.workers)
    assert f"({nodes.url}) with Python workers" in logs, logs[-3000:]
    assert f"spark: {ROWS} rows scored in" in logs, logs[-3000:]
    assert (spark_out / "_SUCCESS").is_file()
    assert len(list(spark_out.glob("part-*.parquet"))) >= 2
    for worker in nodes.workers:  # the work was spread over both worker containers
        assert "Asked to launch executor app-" in text_of(worker), text_of(worker)[-3000:]

    expected, got = scored_rows(local_out), scored_rows(spark_out)
    assert list(got.columns) == list(expected.columns) and len(got) == len(expected) == ROWS
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    print(f"\nscorer batch on the image cluster ({nodes.url}): {ROWS} rows in {seconds:.1f}s")


# The application of the Kubernetes test's driver pod (run by PythonRunner in the image's `driver`
# mode). argv: master URL, executor image, work directory. It writes pod.json (what Spark's Kubernetes
# backend would create for executor 1), waits for that executor, runs Python tasks on it, writes
# result.json, and stops.
DRIVER = r'''
import json, os, sys, time
from pathlib import Path
from pyspark.sql import SparkSession

master, image, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
spark = (SparkSession.builder.master(master).appName("k8s-executor-contract")
         # 2 cores per executor: no worker of the fixture (1 core each) can host one, so the standalone
         # master starts none for this app; the executor below is the only one
         .config("spark.executor.cores", "2")
         .config("spark.kubernetes.container.image", image)
         .config("spark.kubernetes.executor.volumes.emptyDir.tmp.mount.path", "/tmp")  # read-only root: /tmp
         .config("spark.executor.memory", "512m")
         .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
         .getOrCreate())
sc = spark.sparkContext
jvm, jsc = sc._jvm, sc._jsc.sc()
conf = jsc.getConf()
k8s = jvm.org.apache.spark.deploy.k8s
# What KubernetesClusterSchedulerBackend / ExecutorPodsAllocator do for executor 1 of the default profile.
executor_conf = k8s.KubernetesConf.createExecutorConf(conf, "1", sc.applicationId, jvm.scala.Option.apply(None), 0)
spec = jvm.org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBuilder().buildFromFeatures(
    executor_conf, jsc.env().securityManager(), None, jsc.resourceProfileManager().defaultResourceProfile())
utils = k8s.submit.KubernetesClientUtils
name = utils.configMapNameExecutor()
files = utils.buildSparkConfDirFilesMap(name, conf, jvm.PythonUtils.toScalaMap(
    {"spark.kubernetes.namespace": conf.get("spark.kubernetes.namespace", "default")}))
config_map = utils.buildConfigMap(name, files, jvm.PythonUtils.toScalaMap({}))
as_json = jvm.io.fabric8.kubernetes.client.utils.Serialization.asJson
(work / "pod.tmp").write_text(json.dumps({"pod": json.loads(as_json(spec.pod().pod())),
                                          "container": json.loads(as_json(spec.pod().container())),
                                          "configMap": json.loads(as_json(config_map))}))
os.rename(work / "pod.tmp", work / "pod.json")

deadline = time.monotonic() + 120
while "1" not in jsc.getExecutorIds().mkString(",").split(","):
    if time.monotonic() > deadline:
        sys.exit("executor 1 did not register")
    time.sleep(0.2)
hosts = sorted(i.host() for i in jsc.statusTracker().getExecutorInfos())

def probe(_):
    import os, sys
    import scorer
    from scorer.core import Scorer  # the package, not just its name
    yield {"pod": os.environ.get("SPARK_EXECUTOR_POD_NAME"), "python": sys.executable,
           "version": scorer.__version__, "uid": os.getuid(), "local_dirs": os.environ.get("SPARK_LOCAL_DIRS")}

rows = sc.parallelize(range(4), 4).mapPartitions(probe).collect()
(work / "result.json").write_text(json.dumps({"executors": jsc.getExecutorIds().mkString(","), "hosts": hosts,
                                              "rows": rows}))
spark.stop()
'''


def kubelet_container(image: str, pod: dict[str, Any], container: dict[str, Any], config_map: dict[str, Any],
                      workdir: Path) -> DockerContainer:
    """The pod's one container run as a kubelet would run it on this node (host network, pod IP 127.0.0.1):
    its image, args and env (field references resolved), emptyDir volumes as tmpfs, the ConfigMap's
    files at its mount path, its memory limit; plus a read-only root, as a pod template would ask."""
    fields = {"status.podIP": "127.0.0.1", "metadata.name": pod["metadata"]["name"]}
    env = {}
    for var in container["env"]:
        if "valueFrom" in var:
            env[var["name"]] = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            env[var["name"]] = var.get("value", "")
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    tmpfs: dict[str, str] = {}
    binds: dict[str, tuple[str, str]] = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            tmpfs[mount["mountPath"]] = TMPFS
        elif "configMap" in volume:
            assert volume["configMap"]["name"] == config_map["metadata"]["name"]
            files = workdir / mount["name"]
            files.mkdir()
            data = config_map.get("data", {})
            for item in volume["configMap"].get("items") or [{"key": k, "path": k} for k in data]:
                (files / item["path"]).write_text(data[item["key"]])
                (files / item["path"]).chmod(0o644)
            files.chmod(0o755)
            binds[str(files)] = (mount["mountPath"], "ro")
        else:
            raise AssertionError(f"the harness does not mount {volume}")
    memory = container["resources"]["limits"]["memory"]  # Spark writes "<n>Mi"
    text = memory if isinstance(memory, str) else f"{memory['amount']}{memory.get('format', '')}"
    assert text.endswith("Mi"), text
    return node(image, "k8s-executor", *container["args"], env=env, tmpfs=tmpfs, volumes=binds,
                mem_limit=f"{int(text[:-2])}m")


def test_kubernetes_executor_pod_registers_and_runs_tasks(nodes: Nodes, spark_image: dict[str, object],
                                                          tmp_path: Path) -> None:
    """A driver pod's container (``driver`` mode) and the executor pod Spark 3.5's Kubernetes backend
    builds, run as a kubelet would (see the module docstring for what this proves and what it cannot):
    the executor registers with the driver at 127.0.0.1, Python tasks run in that container on the
    image's python with scorer importable, and the driver's stop ends both containers with exit code 0."""
    image = str(spark_image["name"])
    work = tmp_path / "driver"
    work.mkdir()
    work.chmod(0o777)  # the driver (uid 10001) writes pod.json and result.json here
    (work / "driver.py").write_text(DRIVER)
    conf = tmp_path / "driver-conf"  # the driver pod's ConfigMap: spark.properties as spark-submit resolved it
    conf.mkdir()
    (conf / "spark.properties").write_text(f"spark.master={nodes.url}\nspark.app.name=k8s-executor-contract\n"
                                           f"spark.driver.host=127.0.0.1\nspark.driver.port={free_port()}\n"
                                           "spark.submit.deployMode=cluster\n")
    for path in (conf, conf / "spark.properties", work / "driver.py"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    # The driver pod's container as Spark's DriverCommandFeatureStep and BasicDriverFeatureStep make it.
    driver = node(image, "k8s-driver", "driver", "--properties-file", "/opt/spark/conf/spark.properties",
                  "--class", "org.apache.spark.deploy.PythonRunner", f"local://{work}/driver.py", nodes.url, image,
                  str(work), env={"SPARK_DRIVER_BIND_ADDRESS": "127.0.0.1", "SPARK_CONF_DIR": "/opt/spark/conf"},
                  volumes={str(conf): ("/opt/spark/conf", "ro"), str(work): (str(work), "rw")})
    driver.start()
    executor: DockerContainer | None = None
    try:
        deadline = time.monotonic() + 120
        while not (work / "pod.json").exists():
            driver.get_wrapped_container().reload()
            assert driver.get_wrapped_container().status != "exited", f"driver exited:\n{text_of(driver)[-4000:]}"
            assert time.monotonic() < deadline, text_of(driver)[-4000:]
            time.sleep(0.2)
        spec = json.loads((work / "pod.json").read_text())
        pod, container = spec["pod"], spec["container"]
        assert container["image"] == image and container["args"] == ["executor"] and "command" not in container
        names = {v["name"] for v in container["env"]}
        assert {"SPARK_DRIVER_URL", "SPARK_EXECUTOR_ID", "SPARK_EXECUTOR_CORES", "SPARK_EXECUTOR_MEMORY",
                "SPARK_APPLICATION_ID", "SPARK_CONF_DIR", "SPARK_RESOURCE_PROFILE_ID", "SPARK_EXECUTOR_POD_IP",
                "SPARK_EXECUTOR_POD_NAME", "SPARK_LOCAL_DIRS", "SPARK_JAVA_OPT_0"} <= names, sorted(names)
        executor = kubelet_container(image, pod, container, spec["configMap"], tmp_path)
        started = time.monotonic()
        executor.start()
        driver_exit = driver.get_wrapped_container().wait(timeout=180)["StatusCode"]
        assert driver_exit == 0, f"{text_of(driver)[-4000:]}\n--- executor\n{text_of(executor)[-4000:]}"
        result = json.loads((work / "result.json").read_text())
        exit_code = executor.get_wrapped_container().wait(timeout=60)["StatusCode"]
        seconds = time.monotonic() - started
    finally:
        driver.stop()
        if executor is not None:
            executor.stop()
    env_of = {v["name"]: v.get("value") for v in container["env"]}
    assert result["executors"].split(",") == ["1"], result
    assert result["hosts"] == ["127.0.0.1", "127.0.0.1"], result  # the driver and the executor (its pod IP)
    rows = result["rows"]
    # Python workers get the executor's block manager directories: under the pod's SPARK_LOCAL_DIRS (an emptyDir)
    assert all(r.pop("local_dirs").startswith(env_of["SPARK_LOCAL_DIRS"] + "/") for r in rows), rows
    assert rows == [{"pod": pod["metadata"]["name"], "python": IMAGE_PYTHON, "version": scorer.__version__,
                     "uid": 10001}] * 4, rows
    assert exit_code == 0, text_of(executor)[-4000:]
    print(f"\nKubernetes-style executor pod {pod['metadata']['name']}: registered, ran 4 Python tasks, "
          f"exited 0 after the driver's stop; {seconds:.1f}s from container start")


@pytest.mark.parametrize(("mode", "missing"), [
    ("executor", ["SPARK_DRIVER_URL", "SPARK_EXECUTOR_CORES", "SPARK_EXECUTOR_POD_IP"]),
    ("driver", ["SPARK_DRIVER_BIND_ADDRESS"]),
])
def test_kubernetes_modes_without_the_backends_environment(spark_image: dict[str, object], mode: str,
                                                           missing: list[str]) -> None:
    """`executor` / `driver` without what Spark's Kubernetes backend sets in its pods: exit 2 and one line
    naming the missing variables (not a JVM stack trace); a variable that is set is not named."""
    result = subprocess.run([DOCKER, "run", "--rm", "--network", "none", "-e", "SPARK_EXECUTOR_ID=3",
                             str(spark_image["name"]), mode], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert all(name in lines[0] for name in missing) and "SPARK_EXECUTOR_ID" not in lines[0], lines[0]
