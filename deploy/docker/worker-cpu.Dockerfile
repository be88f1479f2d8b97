# syntax=docker/dockerfile:1
# A CPU-only worker: torch's CPU build (no CUDA libraries), diffusers, imagefleet. For tests,
# demos (the demo model runs in seconds on a CPU) and CPU-only preprocessing; the compose file's
# default worker. Models are fetched at run time into the cache volume at /models. Build from
# the repository root:
#   docker build -f deploy/docker/worker-cpu.Dockerfile -t imagefleet/worker:dev-cpu .
# Pin the base by digest for production builds: --build-arg PYTHON_IMAGE=python:...@sha256:...

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY imagefleet ./imagefleet
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    HF_HOME=/models/huggingface \
    IMAGEFLEET_WORKER_CACHE_DIR=/models/imagefleet \
    IMAGEFLEET_WORKER_DEVICE=cpu
RUN python -m venv /opt/venv \
    && groupadd --gid 10001 imagefleet \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /models imagefleet \
    && install -d -o 10001 -g 10001 /models
# torch's CPU build comes from PyTorch's own index (PyPI's Linux wheel is the CUDA build).
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY deploy/docker/requirements/worker.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/*.whl && rm -r /tmp/wheels && pip check
COPY deploy/docker/bin/worker-entrypoint deploy/docker/bin/warmup.py /opt/imagefleet/

USER 10001
WORKDIR /models
VOLUME ["/models"]
ENTRYPOINT ["/opt/imagefleet/worker-entrypoint"]
