# syntax=docker/dockerfile:1.7
# trainhook's own image: the service (`trainhook serve`, the default command), the worker
# (`trainhook worker`) and the migration job (`trainhook migrate`). No model and no training
# data are baked in: models are trained by the worker and kept in the artifact store.
#
#   docker build -t trainhook .
#   docker run --rm -p 8000:8000 -e TRAINHOOK_CONFIG=/etc/trainhook/trainhook.toml trainhook

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: resolve the locked dependencies, then install trainhook itself (not editable) ----
FROM ${PYTHON_IMAGE} AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
# Dependencies first, from the committed lock only: this layer is reused until uv.lock changes.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --extra gcp --no-install-project
COPY README.md ./
COPY trainhook ./trainhook
COPY service ./service
COPY worker ./worker
COPY trainer ./trainer
COPY trainhook_runtime ./trainhook_runtime
COPY migrations ./migrations
COPY examples/social-score-api ./examples/social-score-api
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --extra gcp --no-editable

# ---- runtime: the virtualenv, git (the worker mirrors repositories), bubblewrap (the
# sandbox repositories' tests run in; prlimit from util-linux sets its limits) and a
# non-root user ----
FROM ${PYTHON_IMAGE} AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates bubblewrap util-linux \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 trainhook \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin trainhook \
    && mkdir -p /var/lib/trainhook /etc/trainhook \
    && chown 10001:10001 /var/lib/trainhook
COPY --from=build /opt/venv /opt/venv
# uv in the runtime too: `test_env = "venv"` builds the repositories' test venvs with it
# (following their uv.lock); without it the worker falls back to python -m venv + pip.
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /bin/uv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TRAINHOOK_HOME=/var/lib/trainhook \
    TRAINHOOK_CONFIG=/etc/trainhook/trainhook.toml
WORKDIR /var/lib/trainhook
USER 10001:10001
EXPOSE 8000
# The service's liveness endpoint (the worker and the migration job serve no HTTP; on
# Kubernetes the probes in k8s/ apply instead of this).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["trainhook"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
