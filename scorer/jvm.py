"""The process's JVMs: its SparkSession (created on first use, loopback only) and, for H2O MOJOs, an
in-process JVM holding only H2O's genmodel classes.

Online and ``scorer batch`` (engine local) use a local session (``local[N]``, UI off, Arrow on,
bound to 127.0.0.1). The Spark engine uses the same builder with the master it is given, or the
one ``spark-submit`` configured. The Sparkling Water scoring jar (H2O MOJOs), when installed, is
put on the classpath of the driver and the executors at creation.

H2O MOJOs are scored by :func:`genmodel_jvm`: a JVM started inside this process by JPype (JNI, no
socket, no Spark), whose classpath is the Sparkling Water scoring jar alone (it carries
``hex.genmodel`` and the predictors of every MOJO algorithm). It starts in about 0.3 s, where a
SparkSession takes several seconds, and Python passes it primitive arrays directly. It lives beside a
SparkSession without trouble (pyspark's JVM is a child process reached over py4j): the Spark engine
and a MOJO wrapped by custom code next to a Spark pipeline use both.

A process with a JVM cannot be forked safely (the children would share one py4j connection, or a
copy of a JVM whose threads did not survive the fork): :func:`jvm_started` tells the server and the
batch runner to stay in one process.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

from scorer._cpu import cores
from scorer.errors import BundleCodeError

log = logging.getLogger("scorer.jvm")

_LOCAL_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.adaptive.enabled": "false",
}


def sparkling_jar() -> Path | None:
    """The Sparkling Water scoring assembly jar shipped in ``h2o-pysparkling-scoring-3-5``, if installed."""
    try:
        import sparkling_water
    except ImportError:
        return None
    jar = Path(sparkling_water.__file__).parent / "sparkling_water_scoring_assembly.jar"
    return jar if jar.is_file() else None


def _prepare_environment() -> None:
    # pyspark 3.5 on pandas 3 warns about its own use of deprecated pandas and distutils APIs on every
    # call: nothing a bundle author or operator can act on.
    warnings.filterwarnings("ignore", module=r"pyspark\.")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


def spark_session(master: str | None = None, *, app_name: str = "scorer", conf: dict[str, str] | None = None) -> Any:
    """Get the process's SparkSession, creating it if needed.

    ``master=None``: the master ``spark-submit`` configured, else ``local[<cores>]`` with the
    loopback-only settings above. Any other master (``spark://``, ``k8s://``, ``yarn``) keeps
    Spark's own configuration for addresses.
    """
    _prepare_environment()
    try:
        from pyspark import SparkConf, SparkContext
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise BundleCodeError(
            "this bundle needs Spark: install scorer[spark] (pyspark 3.5, Java 17) or use the Spark image"
        ) from exc
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if os.environ.get("PYSPARK_GATEWAY_PORT"):  # under spark-submit: attach to its JVM (its --master, --conf)
        SparkContext._ensure_initialized()
    submitted = SparkConf()  # spark-submit passes its settings as spark.* system properties
    builder = SparkSession.builder.appName(app_name)
    chosen = master or submitted.get("spark.master", None)
    if chosen is None:
        chosen = f"local[{cores()}]"  # the CPU quota too: a task thread per core it may use
    if chosen.startswith("local"):  # on a cluster the driver must be reachable by its executors
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = builder.master(chosen)
    if chosen.startswith("local"):
        for key, value in _LOCAL_CONF.items():
            builder = builder.config(key, value)
        if "spark.driver.extraJavaOptions" not in (conf or {}) and not submitted.contains("spark.driver.extraJavaOptions"):
            log4j = Path(__file__).with_name("log4j2.properties")
            builder = builder.config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={log4j.as_uri()}")
    else:
        builder = builder.config("spark.sql.execution.arrow.pyspark.enabled", "true")
    jar = sparkling_jar()
    if jar is not None:
        jars = [j for j in (submitted.get("spark.jars", ""), str(jar)) if j]
        builder = builder.config("spark.jars", ",".join(jars))
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    log.info("started Spark %s session on %s", session.version, chosen)
    return session


# The genmodel JVM's options. -Xrs: the JVM installs no handlers for SIGTERM, SIGINT and SIGHUP, which stay
# the server's (graceful drain); -XX:-UsePerfData: no hsperfdata file under /tmp.
_GENMODEL_JVM_OPTIONS = ("-Xrs", "-XX:-UsePerfData", "-Djava.awt.headless=true")
_genmodel_lock = threading.Lock()


def genmodel_jvm() -> Any:
    """The ``jpype`` module, with this process's in-process JVM started (once) for H2O genmodel.

    Its classpath is the Sparkling Water scoring jar alone. Raises :class:`BundleCodeError` when JPype,
    the jar or a Java runtime is missing.
    """
    try:
        import jpype
    except ImportError as exc:
        raise BundleCodeError(
            "H2O MOJOs need JPype1 and the Sparkling Water scoring jar: install scorer[spark] (Java 17) "
            "or use the Spark image"
        ) from exc
    with _genmodel_lock:
        if jpype.isJVMStarted():
            return jpype
        jar = sparkling_jar()
        if jar is None:
            raise BundleCodeError(
                "H2O MOJOs need the Sparkling Water scoring jar (h2o-pysparkling-scoring-3-5): install scorer[spark]"
            )
        try:
            jpype.startJVM(*_GENMODEL_JVM_OPTIONS, classpath=[str(jar)], convertStrings=False, interrupt=False)
        except (OSError, RuntimeError, ValueError) as exc:  # ValueError: JPype finds no JVM
            raise BundleCodeError(f"cannot start a Java runtime for H2O MOJOs (Java 17 needed): {exc}") from exc
        _quiet_slf4j(jpype)
        version = ".".join(map(str, jpype.getJVMVersion()))
        log.info("started an in-process JVM (Java %s) for H2O genmodel", version)
    return jpype


def _quiet_slf4j(jpype: Any) -> None:
    """genmodel logs through SLF4J, which has no binding in the jar and says so on stderr at its first use
    (three lines naming a website): initialise it here with stderr discarded."""
    system = jpype.JClass("java.lang.System")
    err = system.err
    system.setErr(jpype.JClass("java.io.PrintStream")(jpype.JClass("java.io.OutputStream").nullOutputStream()))
    try:
        jpype.JClass("org.slf4j.LoggerFactory").getILoggerFactory()
    finally:
        system.setErr(err)


def jvm_started() -> bool:
    """Whether this process has started a JVM, through pyspark or for genmodel (so it must not fork)."""
    jpype = sys.modules.get("jpype")
    if jpype is not None and jpype.isJVMStarted():
        return True
    if "pyspark" not in sys.modules:
        return False
    from pyspark import SparkContext

    return SparkContext._gateway is not None
