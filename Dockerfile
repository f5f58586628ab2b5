# syntax=docker/dockerfile:1
# svcscope: the dashboard (default CMD) and, from the same image, the echo backend of the demo workloads
# (`python -m app.echo serve`).
#
#   docker build -t svcscope:dev .                      # from python:3.12-slim, dependencies from PyPI
#   make demo                                           # local cluster: buildah, FROM localhost/svcscope-base,
#                                                       # dependencies from a wheelhouse made on the host
#
# The same BASE_IMAGE is used by both stages: the virtualenv's interpreter is a symlink to the base's python3,
# so it must be the very same interpreter at run time. Any Debian-like image with python3 + venv works.
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS builder
# Extra `pip install` arguments, e.g. `--no-index` for an offline build from a wheelhouse.
ARG PIP_INSTALL_ARGS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only the dependency list first, so that a code change does not reinstall the dependencies. build/wheelhouse
# (optional: the glob may match nothing) holds pre-downloaded wheels; scripts/demo.py fills it.
# Every dependency installs from a binary wheel; google-re2's links libstdc++.so.6, which any Debian base has
# (apt, priority required, needs it: python:3.12-slim and the debootstrap minbase alike).
COPY pyproject.toml build/wheelhouse* /src/wheelhouse/
RUN python3 -c 'import sys, tomllib; deps = tomllib.load(open("wheelhouse/pyproject.toml", "rb"))["project"]["dependencies"]; sys.stdout.write("\n".join(deps) + "\n")' > requirements.txt \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --find-links /src/wheelhouse ${PIP_INSTALL_ARGS} -r requirements.txt \
 && /opt/venv/bin/pip uninstall -q -y setuptools pip  # neither is needed at run time
# The application is not installed as a package: it runs from /app, next to its templates and static files.
COPY app/ /app/app/
COPY templates/ /app/templates/
COPY static/ /app/static/
# Byte-compile now: the root filesystem is read-only at run time.
RUN python3 -m compileall -q -j 0 /opt/venv /app/app

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="svcscope" \
      org.opencontainers.image.description="See how Kubernetes ClusterIP Services really route traffic" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
WORKDIR /app
# Numeric, so that the kubelet can verify runAsNonRoot without a passwd lookup.
USER 10001:10001
EXPOSE 8080
# One process: the Kubernetes cache and the probe runs live in it. Graceful shutdown is bounded because open
# SSE streams would otherwise hold the process until the kubelet kills it (the chart keeps
# terminationGracePeriodSeconds above this). Proxy headers are not trusted: the dashboard is reached
# through kubectl port-forward, never through a proxy that could vouch for them.
# The h11 protocol of app.web.server closes connections without resetting them (a reset takes kubectl
# port-forward down) and answers oversized request heads with 414/431.
CMD ["python", "-m", "uvicorn", "--factory", "app.main:create_app", \
     "--host", "0.0.0.0", "--port", "8080", "--http", "app.web.server:LingeringH11Protocol", \
     "--no-proxy-headers", "--timeout-graceful-shutdown", "10"]
