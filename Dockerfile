# syntax=docker/dockerfile:1
# Organization service image: `docker build -t orgsvc .`, run with `docker compose up -d`.
# Two stages: the build stage makes a virtualenv in /opt/venv, the dependencies first (a layer
# that only a change of pyproject.toml rebuilds), then the project itself with `--no-deps`; the
# runtime stage copies only that venv onto a clean slim image (no pip cache, no build tree, no
# sources). No extras: the dev tools and the embedded nx-27017 store (`orgsvc[embedded]`) are not
# in the image. No secret is baked in: JWT_SECRET and MONGODB_URL come from the environment.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

WORKDIR /src

# 1. The runtime dependencies, read from pyproject.toml's [project] dependencies (not its extras).
#    Every one has a manylinux wheel for CPython 3.11, so no compiler is needed. The cache mount
#    keeps re-builds fast without leaving pip's cache in any layer. (No lock file yet: versions
#    resolve within pyproject.toml's ranges at build time.)
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > /tmp/requirements.txt \
    && pip install --requirement /tmp/requirements.txt

# 2. The project alone (pyproject.toml names README.md as the package readme, so the build needs
#    it); `pip check` fails the build if step 1 missed a dependency, and importing the app (from
#    outside the sources) fails it if the pages' templates or stylesheet did not get installed.
COPY README.md ./
COPY app ./app
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps . \
    && pip check \
    && orgsvc --help > /dev/null \
    && cd / && python -c "import app.main"

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# The version lives in pyproject.toml only (the service reads it from the installed package);
# a release build can label it: `docker build --label org.opencontainers.image.version=X.Y.Z`.
LABEL org.opencontainers.image.title="orgsvc" \
      org.opencontainers.image.description="Organization service (FastAPI + MongoDB)" \
      org.opencontainers.image.licenses="MIT"

# A fixed numeric uid/gid so volume ownership and `USER` checks (runAsNonRoot) are predictable.
RUN groupadd --system --gid 10001 orgsvc \
    && useradd --system --uid 10001 --gid orgsvc --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin orgsvc

# Root-owned and world-readable (pip installs 0644/0755): the service user can import and run
# everything but cannot modify its own code.
COPY --from=build /opt/venv /opt/venv

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ENVIRONMENT=production \
    HOST=0.0.0.0 \
    PORT=8000

# No .env here (.dockerignore keeps it out of the build context); settings come from the env.
WORKDIR /app
USER 10001:10001

EXPOSE 8000

# Liveness only (/health makes no database call). urllib, because slim images have no curl;
# the empty ProxyHandler keeps any HTTP(S)_PROXY variables from routing the probe elsewhere.
# urlopen raises on a refused connection, a timeout or any non-2xx status -> exit code 1.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)"]

# uvicorn runs as PID 1 and handles SIGTERM itself (graceful shutdown of up to 30 s, see
# app/cli.py); give the container at least that long to stop (compose: stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["orgsvc"]
CMD ["serve"]
