# syntax=docker/dockerfile:1
# The orchestrator: the HTTP API and its background duties. No torch; PostgreSQL and S3 clients.
# Build from the repository root:
#   docker build -f deploy/docker/orchestrator.Dockerfile -t imagefleet/orchestrator:dev .
# Pin the base by digest for production builds: --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:...

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY imagefleet ./imagefleet
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    IMAGEFLEET_DATA_DIR=/data
RUN python -m venv /opt/venv \
    && groupadd --gid 10001 imagefleet \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /data imagefleet \
    && install -d -o 10001 -g 10001 /data
# Dependencies first, in their own layer: a new imagefleet release re-pulls only the small layer
# below this one.
COPY deploy/docker/requirements/orchestrator.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/*.whl && rm -r /tmp/wheels && pip check
COPY deploy/docker/bin/create_bucket.py /opt/imagefleet/create_bucket.py

USER 10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
# /healthz answers 200 while this replica can reach its database.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
# IMAGEFLEET_MIGRATE_ON_START (default 1) migrates the schema at start; set it to 0 on replicas
# that a migrations job (`imagefleet db upgrade`) runs ahead of.
ENTRYPOINT ["imagefleet"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
