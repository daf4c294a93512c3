# openlisten for NVIDIA GPU hosts: slim Debian plus cuBLAS from NVIDIA's Python wheel instead of
# a CUDA base image. Smaller, and buildable wherever pip reaches, CI machines included.
#
#   docker build -t openlisten:gpu .
#   docker run --gpus all -p 8000:8000 openlisten:gpu
#   make image-gpu        (the same with buildah on a Debian base made here: docker/build.sh)
#
# The host needs only the NVIDIA driver (and the container toolkit). CTranslate2 (>= 4.7) needs
# cuBLAS alone on the GPU (its Conv1D no longer uses cuDNN) and finds it through LD_LIBRARY_PATH
# below. docker/Dockerfile.cuda is the same image on NVIDIA's CUDA base instead. No torch:
# Silero VAD runs on onnxruntime. See docs/deploy.md.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

ARG MODELS="tiny.en base"
ARG EXTRAS="base,cuda"

# Debian bookworm's python3 is 3.11: the wheels' library folders below depend on it.
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/openlisten \
    PATH=/opt/openlisten/bin:$PATH \
    LD_LIBRARY_PATH=/opt/openlisten/lib/python3.11/site-packages/nvidia/cublas/lib \
    OPENLISTEN_MODELS_DIR=/models \
    OPENLISTEN_HOST=0.0.0.0 \
    OPENLISTEN_STATE_DIR=/var/lib/openlisten \
    OPENLISTEN_PORT=8000 \
    OPENLISTEN_DEVICE=cuda

SHELL ["/bin/sh", "-eu", "-c"]

# The base made by docker/base.sh already has python3-venv; a stock debian:bookworm-slim gets it.
# hadolint ignore=DL3008
RUN if ! python3 -c "import venv, ensurepip" 2>/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv "$VIRTUAL_ENV" \
    && groupadd --system --gid 10001 openlisten \
    && useradd --system --uid 10001 --gid openlisten --home-dir /home/openlisten --create-home openlisten \
    && mkdir -p /models /var/lib/openlisten

COPY pyproject.toml README.md /src/
COPY models/catalog.toml /src/models/catalog.toml
COPY server /src/server
COPY docker/install.sh /src/docker/install.sh

# install.sh fails the build if CTranslate2 cannot resolve a CUDA library (GPU=1).
RUN GPU=1 EXTRAS="$EXTRAS" MODELS="$MODELS" sh /src/docker/install.sh /src \
    && rm -rf /src \
    && chown -R openlisten:openlisten /models /var/lib/openlisten

USER 10001:10001
WORKDIR /home/openlisten
# /var/lib/openlisten: pending callback jobs, kept across restarts.
VOLUME ["/models", "/var/lib/openlisten"]
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('OPENLISTEN_PORT', '8000'), timeout=4)"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["openlisten"]
CMD ["serve"]
