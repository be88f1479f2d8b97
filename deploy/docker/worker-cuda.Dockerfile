# syntax=docker/dockerfile:1
# A GPU worker: torch's CUDA build, diffusers, imagefleet. No model weights inside: models are
# fetched at run time into the cache volume at /models. Build from the repository root:
#   docker build -f deploy/docker/worker-cuda.Dockerfile -t imagefleet/worker:dev-cuda .
#
# The base is NVIDIA's smallest CUDA image ("base": CUDA runtime core, driver compatibility
# checks and the NVIDIA_* settings the container toolkit reads). The larger "runtime" flavour is
# not used: torch's wheels bring their own cuBLAS, cuDNN and the rest, and a second copy would
# add gigabytes to every cold start. The base's CUDA version follows the torch build (torch
# 2.13.0 on PyPI is built for CUDA 13.0, which needs an NVIDIA driver of the 580 series or newer).
# Pin by digest for production builds: --build-arg CUDA_IMAGE=nvidia/cuda:...@sha256:...

ARG CUDA_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04

FROM ${CUDA_IMAGE} AS python
ENV DEBIAN_FRONTEND=noninteractive
# The Ubuntu release is pinned by the base image tag; its python3 (3.12) takes that release's
# security updates, so the package versions are left to the archive.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

FROM python AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY imagefleet ./imagefleet
RUN python3 -m venv /tmp/build && /tmp/build/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python
ARG TORCH_VERSION=2.13.0
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    HF_HOME=/models/huggingface \
    IMAGEFLEET_WORKER_CACHE_DIR=/models/imagefleet \
    IMAGEFLEET_WORKER_DEVICE=cuda \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
RUN python3 -m venv /opt/venv \
    && groupadd --gid 10001 imagefleet \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /models imagefleet \
    && install -d -o 10001 -g 10001 /models
# Largest and slowest-changing first: torch with its CUDA libraries, then the other
# dependencies, then imagefleet itself, so an upgrade re-pulls only the layers that changed.
RUN pip install "torch==${TORCH_VERSION}"
COPY deploy/docker/requirements/worker.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/*.whl && rm -r /tmp/wheels && pip check
COPY deploy/docker/bin/worker-entrypoint deploy/docker/bin/warmup.py /opt/imagefleet/

USER 10001
WORKDIR /models
VOLUME ["/models"]
# Workers take no inbound connections; they pull work from IMAGEFLEET_URL with
# IMAGEFLEET_WORKER_KEY (or a mounted IMAGEFLEET_WORKER_KEY_FILE).
ENTRYPOINT ["/opt/imagefleet/worker-entrypoint"]
