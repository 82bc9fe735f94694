#!/bin/bash
# The Spark image's entrypoint (tini runs it as PID 1's child; every branch ends in `exec`, so the
# process that receives SIGTERM is the scorer or the JVM itself). It dispatches on the first argument:
#
#   serve | batch | info | anything else   the scorer's own command line, exactly as before
#   master | worker ARGS...                a Spark standalone master or worker (spark-class ...Master/...Worker)
#   driver ARGS... | executor              Spark's Kubernetes container contract (spark-submit --master k8s://...)
#
# A shell script rather than a `scorer` subcommand: the Spark modes only exec a JVM with arguments
# taken from the environment, which is what Spark's own entrypoint does, and starting Python (and the
# scorer package) first would cost every executor pod its start-up time and add nothing.
#
# The Kubernetes modes follow Spark 3.5's image entrypoint: resource-managers/kubernetes/docker/src/
# main/dockerfiles/spark/entrypoint.sh in apache/spark, as shipped in the official images by
# apache/spark-docker (3.4+/3.5: `--conf spark.executorEnv.SPARK_DRIVER_POD_IP`, the working
# directory on the executor's classpath, SPARK_JAVA_OPT_n in numeric order). What the backend gives
# the pods, in Spark 3.5's resource-managers/kubernetes/core sources:
#   - executor pods (features/BasicExecutorFeatureStep.scala): args ["executor"]; env SPARK_DRIVER_URL,
#     SPARK_EXECUTOR_CORES, SPARK_EXECUTOR_MEMORY, SPARK_APPLICATION_ID, SPARK_CONF_DIR=/opt/spark/conf
#     (a ConfigMap mounted there), SPARK_EXECUTOR_ID, SPARK_RESOURCE_PROFILE_ID, SPARK_CLASSPATH
#     (spark.executor.extraClassPath), SPARK_JAVA_OPT_0..n (spark.executor.extraJavaOptions and the
#     executor start-up settings: ports, auth, rpc), spark.executorEnv.*, SPARK_USER, and from the
#     pod's own fields SPARK_EXECUTOR_POD_IP (status.podIP) and SPARK_EXECUTOR_POD_NAME;
#     features/LocalDirsFeatureStep.scala adds SPARK_LOCAL_DIRS with an emptyDir there.
#   - driver pods (features/BasicDriverFeatureStep.scala, DriverCommandFeatureStep.scala): args
#     ["driver", "--properties-file", "/opt/spark/conf/spark.properties", "--class", MAIN, RESOURCE,
#     APP ARGS...]; env SPARK_DRIVER_BIND_ADDRESS (status.podIP), SPARK_CONF_DIR=/opt/spark/conf.
#   - the executor's arguments are parsed by scheduler/cluster/k8s/KubernetesExecutorBackend.scala
#     (--driver-url --executor-id --cores --app-id --hostname --resourceProfileId --podName).
#
# Differences from Spark's image, all for this image's layout and its read-only, non-root rules:
#   - SPARK_HOME is pyspark's directory (the image sets it); there is no /opt/spark.
#   - The pod's address becomes SPARK_LOCAL_IP (the image's default, 127.0.0.1, is for local sessions).
#   - The JNI codecs unpacked at build time (/opt/scorer/native, see Dockerfile.spark) go on the library
#     path, and snappy is told to load it from there: on Kubernetes SPARK_CONF_DIR is the ConfigMap,
#     so the image's spark-defaults.conf that says so for local sessions is not read.
#   - A standalone worker keeps its work directory under /tmp (SPARK_WORKER_DIR), not in SPARK_HOME.
#   - No passwd entry is faked for arbitrary uids (the image's user is 10001, with an entry), and no
#     nested tini (tini is already PID 1).
set -euo pipefail

NATIVE=/opt/scorer/native
SNAPPY_FROM_LIBRARY_PATH=-Dorg.xerial.snappy.use.systemlib=true

require() {  # the variables Spark's Kubernetes backend sets for this mode, one line naming the missing ones
  local missing=() name
  for name in "$@"; do [ -n "${!name:-}" ] || missing+=("$name"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "scorer-spark $MODE: ${missing[*]} not set (Spark's Kubernetes backend sets them in the pods it creates)" >&2
    exit 2
  fi
}

MODE="${1:-serve}"
case "$MODE" in
  master)
    shift
    exec "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.master.Master "$@"
    ;;
  worker)
    shift
    export SPARK_WORKER_DIR="${SPARK_WORKER_DIR:-/tmp/spark-worker}"
    # Executors the worker launches inherit its environment (java.library.path comes from
    # LD_LIBRARY_PATH); snappy reads org-xerial-snappy.properties from their classpath, which holds
    # SPARK_CONF_DIR (the image's /opt/scorer/spark-conf unless replaced).
    export LD_LIBRARY_PATH="$NATIVE${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    exec "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker "$@"
    ;;
  driver)
    shift
    require SPARK_DRIVER_BIND_ADDRESS
    export SPARK_LOCAL_IP="$SPARK_DRIVER_BIND_ADDRESS"
    export LD_LIBRARY_PATH="$NATIVE${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export SPARK_SUBMIT_OPTS="$SNAPPY_FROM_LIBRARY_PATH${SPARK_SUBMIT_OPTS:+ $SPARK_SUBMIT_OPTS}"
    exec "$SPARK_HOME/bin/spark-submit" \
      --conf "spark.driver.bindAddress=$SPARK_DRIVER_BIND_ADDRESS" \
      --conf "spark.executorEnv.SPARK_DRIVER_POD_IP=$SPARK_DRIVER_BIND_ADDRESS" \
      --deploy-mode client \
      "$@"
    ;;
  executor)
    shift
    require SPARK_DRIVER_URL SPARK_EXECUTOR_ID SPARK_EXECUTOR_CORES SPARK_EXECUTOR_MEMORY \
      SPARK_APPLICATION_ID SPARK_EXECUTOR_POD_IP SPARK_RESOURCE_PROFILE_ID
    classpath="${SPARK_CLASSPATH:-}:$SPARK_HOME/jars/*"
    if [ -n "${SPARK_EXTRA_CLASSPATH:-}" ]; then classpath="$classpath:$SPARK_EXTRA_CLASSPATH"; fi
    if [ -n "${HADOOP_CONF_DIR+x}" ]; then classpath="$HADOOP_CONF_DIR:$classpath"; fi
    classpath="${SPARK_CONF_DIR:-$SPARK_HOME/conf}:$classpath:$PWD"
    # SPARK_JAVA_OPT_0..n in numeric order (the order Spark numbered them; later ones win), each one
    # argument whatever it holds.
    java_opts=()
    for name in $(compgen -v SPARK_JAVA_OPT_ | sort -t_ -k4 -n); do java_opts+=("${!name}"); done
    export SPARK_LOCAL_IP="$SPARK_EXECUTOR_POD_IP"
    export LD_LIBRARY_PATH="$NATIVE${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    exec "$JAVA_HOME/bin/java" \
      "$SNAPPY_FROM_LIBRARY_PATH" \
      "${java_opts[@]}" \
      -Xms"$SPARK_EXECUTOR_MEMORY" \
      -Xmx"$SPARK_EXECUTOR_MEMORY" \
      -cp "$classpath:${SPARK_DIST_CLASSPATH:-}" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "$SPARK_DRIVER_URL" \
      --executor-id "$SPARK_EXECUTOR_ID" \
      --cores "$SPARK_EXECUTOR_CORES" \
      --app-id "$SPARK_APPLICATION_ID" \
      --hostname "$SPARK_EXECUTOR_POD_IP" \
      --resourceProfileId "$SPARK_RESOURCE_PROFILE_ID" \
      --podName "${SPARK_EXECUTOR_POD_NAME:-}"
    ;;
  *)
    exec scorer "$@"
    ;;
esac
