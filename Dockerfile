# syntax=docker/dockerfile:1

# imagegate container image.
#
#   docker build -t imagegate .
#   docker run -p 8000:8000 -e IMAGEGATE_SECRET_KEY=... -v imagegate-data:/data imagegate
#
# The default command is `imagegate serve` (API and worker in one process, SQLite under /data);
# docker-compose.yml runs the distributed layout (`imagegate migrate`, `api`, `worker`).

# ---------------------------------------------------------------------------------------------
# builder: a virtualenv at /opt/venv holding imagegate and its dependencies (wheels only, so no
# compiler or apt packages are needed). The runtime stage copies it to the same path, because
# a virtualenv's scripts refer to its interpreter by absolute path.
# ---------------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

WORKDIR /src

# Dependencies first, in their own layer: it is rebuilt only when pyproject.toml changes.
# An empty `app` package stands in for the code so that setuptools can resolve the project.
COPY pyproject.toml README.md ./
RUN mkdir app \
    && touch app/__init__.py \
    && pip install --no-cache-dir . \
    && rm -rf app build ./*.egg-info

# Then the application itself (a regular, non-editable install into site-packages).
COPY app ./app
RUN pip install --no-cache-dir --no-deps --force-reinstall . \
    && imagegate --help > /dev/null

# ---------------------------------------------------------------------------------------------
# runtime
# ---------------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    IMAGEGATE_HOST=0.0.0.0 \
    IMAGEGATE_DATA_DIR=/data

# A fixed, unprivileged uid/gid (10001) so volume ownership is predictable across rebuilds and
# orchestrators that require a numeric non-root user accept the image. /data (and /data/files,
# the default output folder) belong to it; a fresh named volume mounted at /data inherits that.
RUN groupadd --system --gid 10001 imagegate \
    && useradd --system --no-log-init --uid 10001 --gid imagegate \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin imagegate \
    && mkdir -p /data/files \
    && chown -R imagegate:imagegate /data

COPY --from=builder /opt/venv /opt/venv

# Code and migrations stay owned by root: the service user can read them but not change them.
WORKDIR /app
COPY alembic.ini ./
COPY migrations ./migrations

USER 10001:10001

VOLUME ["/data"]

EXPOSE 8000

# The slim image has no curl: probe /healthz with the standard library.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('IMAGEGATE_PORT', '8000'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status == 200 else 1)"]

CMD ["imagegate", "serve"]
