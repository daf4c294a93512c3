# openlisten for NVIDIA GPU hosts.
#
#   docker build -t openlisten:gpu .
#   docker run --gpus all -p 8000:8000 openlisten:gpu
#
# The base carries CUDA 12 and cuDNN 9, which is what the ctranslate2 4.x wheels are built
# against. No torch: Silero VAD runs on onnxruntime. See docs/deploy.md.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}

# Models to bake into /models (catalog names) and the extras that ship their weights.
ARG MODELS="tiny.en base"
ARG EXTRAS="base"

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/openlisten \
    PATH=/opt/openlisten/bin:$PATH \
    OPENLISTEN_MODELS_DIR=/models \
    OPENLISTEN_HOST=0.0.0.0 \
    OPENLISTEN_PORT=8000 \
    OPENLISTEN_DEVICE=cuda

SHELL ["/bin/sh", "-eu", "-c"]

# Ubuntu's own python3; versions float with the pinned base image's security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "$VIRTUAL_ENV" \
    && groupadd --system --gid 10001 openlisten \
    && useradd --system --uid 10001 --gid openlisten --home-dir /home/openlisten --create-home openlisten \
    && mkdir -p /models

COPY pyproject.toml README.md /src/
COPY models/catalog.toml /src/models/catalog.toml
COPY server /src/server
COPY docker/install.sh /src/docker/install.sh

RUN GPU=1 EXTRAS="$EXTRAS" MODELS="$MODELS" sh /src/docker/install.sh /src \
    && rm -rf /src \
    && chown -R openlisten:openlisten /models

USER 10001:10001
WORKDIR /home/openlisten
VOLUME ["/models"]
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('OPENLISTEN_PORT', '8000'), timeout=4)"]

# A second SIGTERM skips the drain; `docker stop -t` should exceed OPENLISTEN_SHUTDOWN_DEADLINE_S.
STOPSIGNAL SIGTERM
ENTRYPOINT ["openlisten"]
CMD ["serve"]
