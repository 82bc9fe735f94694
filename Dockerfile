# The scorer image: `serve` (default, port 8080) or `batch`, for docker run, Kubernetes and
# SageMaker-style hosts. Build anywhere with:
#   docker build -t scorer:$(python3 -c 'import scorer; print(scorer.__version__)') \
#     --build-arg VERSION=... --build-arg REVISION=$(git rev-parse HEAD) .
# BASE_IMAGE is any Debian bookworm image (python3 3.11 comes from Debian's packages).
# Behind a TLS-inspecting proxy, pass its CA bundle as a BuildKit secret:
#   --secret id=cacert,src=/etc/ssl/certs/ca-certificates.crt
#
# Supply chain: every Python package comes from docker/requirements.lock, each version with its sha256
# hashes, installed with pip's --require-hashes (a missing or different hash fails the build); the
# scorer package is built from /src with setuptools from that lock and nothing else fetched.
# A release build pins the base image by digest and records it (OCI labels image.base.name/.digest):
#   digest=$(docker buildx imagetools inspect debian:bookworm-slim --format '{{.Manifest.Digest}}')
#   (or after `docker pull debian:bookworm-slim`: the part after '@' of
#    docker image inspect --format '{{index .RepoDigests 0}}' debian:bookworm-slim)
#   docker build --build-arg BASE_IMAGE=debian:bookworm-slim@$digest --build-arg BASE_DIGEST=$digest ...
# The build fails when BASE_IMAGE names a digest and BASE_DIGEST is not that digest. A base made
# locally (debootstrap + docker import, as scripts/provision-docker does) has no registry digest, so
# `FROM name@sha256:...` cannot name it (BuildKit resolves digests at the registry only): build it
# by tag and record its image id, as the container tests do:
#   --build-arg BASE_IMAGE=scorer-base:bookworm \
#   --build-arg BASE_DIGEST=$(docker image inspect --format '{{.Id}}' scorer-base:bookworm)
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*

FROM runtime AS build
ARG BASE_IMAGE
ARG BASE_DIGEST=
RUN case "$BASE_IMAGE" in *@*) [ "${BASE_IMAGE##*@}" = "$BASE_DIGEST" ] \
      || { echo "BASE_DIGEST must be the digest in BASE_IMAGE ($BASE_IMAGE): got '$BASE_DIGEST'" >&2; exit 1; };; esac
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/*
# Pinned, hash-checked dependency set (docker/requirements.lock; scripts/lock-requirements updates
# it), with setuptools, the build backend of the scorer package.
COPY docker/requirements.lock /tmp/requirements.lock
RUN --mount=type=secret,id=cacert,required=false \
    python3 -m venv /opt/scorer \
 && if [ -f /run/secrets/cacert ]; then export PIP_CERT=/run/secrets/cacert; fi \
 && /opt/scorer/bin/pip install --no-cache-dir --disable-pip-version-check -q --require-hashes -r /tmp/requirements.lock
COPY pyproject.toml README.md /src/
COPY scorer /src/scorer
# No index, no dependencies, no isolated build environment (which would fetch an unhashed setuptools):
# built by the locked setuptools above.
RUN /opt/scorer/bin/pip install --no-cache-dir --disable-pip-version-check -q --no-index --no-deps --no-build-isolation /src
# The embedded example bundle (vendor layout), built deterministically by the repo's script.
COPY bundles /src/bundles
# Bytecode stays (compiled for every module, ~20 % of the image): without it each container start
# compiles scikit-learn, scipy and pandas again, which doubled the time to /ready.
RUN /opt/scorer/bin/python /src/bundles/build.py --only spam --out /opt/scorer-example \
 && find /opt/scorer-example -name __pycache__ -prune -exec rm -rf {} + \
 && /opt/scorer/bin/python -m compileall -q -j 0 /opt/scorer/lib > /dev/null

FROM runtime
ARG VERSION=0.0.0
ARG REVISION=unknown
ARG BASE_IMAGE
ARG BASE_DIGEST=
LABEL org.opencontainers.image.base.name="${BASE_IMAGE}" \
      org.opencontainers.image.base.digest="${BASE_DIGEST}" \
      org.opencontainers.image.title="scorer" \
      org.opencontainers.image.description="Model bundle scoring service: online (HTTP) and offline (files)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/scorer /opt/scorer
COPY --from=build /opt/scorer-example/spam /opt/scorer/example-bundle
# /var/cache/scorer-requirements: where a named volume keeps install_requirements' packages across
# restarts (a new volume copies this directory's owner and mode: private to uid 10001, as the scorer demands).
RUN useradd --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin scorer \
 && install -d -m 0700 -o 10001 -g 10001 /var/cache/scorer-requirements
ENV PATH=/opt/scorer/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SCORER_HOST=0.0.0.0 \
    SCORER_PORT=8080
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/ping' % os.environ.get('SCORER_PORT', '8080'), timeout=2)"]
# tini as PID 1 forwards SIGTERM to scorer (docker stop drains in-flight requests, then exits 0).
ENTRYPOINT ["tini", "--", "scorer"]
CMD ["serve"]
