# bbbscaler's container image. Built outside CI (no Docker engine there); CI lints this
# file with hadolint. Build from the repository root:
#   docker build -t bbbscaler:$(python -c 'import bbbcore; print(bbbcore.__version__)') .
#
# Base pinned by Python patch release and Debian release (trixie: bookworm's regular
# security support has ended). Pin it by digest through the build argument, with the
# digest your registry resolves the tag to:
#   docker build --build-arg PYTHON_IMAGE=python:3.11.14-slim-trixie@sha256:<digest> .
# versions.yaml holds this tag; tests/test_platform.py keeps the two equal.
ARG PYTHON_IMAGE=python:3.11.14-slim-trixie

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/bbbscaler
# The runtime dependencies only (pyproject's pins), every transitive one held to the
# tested versions in requirements.lock; all come as wheels, so no compiler is needed.
COPY pyproject.toml requirements.lock README.md ./
COPY bbbcore/ bbbcore/
COPY bbbnode/ bbbnode/
COPY bbbscaler/ bbbscaler/
COPY bbbsim/ bbbsim/
RUN /opt/bbbscaler/bin/pip install --no-cache-dir --constraint requirements.lock . \
    && /opt/bbbscaler/bin/pip uninstall --yes pip setuptools

FROM ${PYTHON_IMAGE}
# A fixed uid/gid: the Helm chart's securityContext runs as 10001 and checks non-root.
RUN groupadd --system --gid 10001 bbbscaler \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin bbbscaler
COPY --from=build /opt/bbbscaler /opt/bbbscaler
ENV PATH=/opt/bbbscaler/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# /metrics and /healthz. No HEALTHCHECK: Kubernetes probes /healthz itself.
EXPOSE 9689
ENTRYPOINT ["bbbscaler"]
CMD ["run"]
