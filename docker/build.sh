#!/bin/sh
# Build an image with buildah, no Docker engine needed (what CI and `make image-*` run).
#
# Usage: docker/build.sh cpu|gpu [TAG]
# Environment:
#   BASE     the base image (default: localhost/openlisten-base:bookworm, made by docker/base.sh)
#   MODELS, EXTRAS   passed to the Dockerfile's build args when set
# The host's pip configuration and CA bundle, when present, are mounted for the build's RUN
# steps only (a mirror or a TLS-inspecting proxy); nothing of them lands in the image.
set -eu
cd "$(dirname "$0")/.."

kind="${1:?usage: docker/build.sh cpu|gpu [TAG]}"
tag="${2:-localhost/openlisten:$kind}"
base="${BASE:-localhost/openlisten-base:bookworm}"
case "$kind" in
    cpu) dockerfile=docker/Dockerfile.cpu; base_arg=PYTHON_IMAGE ;;
    gpu) dockerfile=Dockerfile; base_arg=BASE_IMAGE ;;
    *) echo "unknown image kind: $kind" >&2; exit 2 ;;
esac

set -- --isolation chroot --layers=false --format docker -f "$dockerfile" -t "$tag" --build-arg "$base_arg=$base"
for arg in MODELS EXTRAS; do
    eval "value=\${$arg-}"
    if [ -n "$value" ]; then set -- "$@" --build-arg "$arg=$value"; fi
done
for path in /etc/pip.conf /etc/xdg/pip /etc/ssl/certs/ca-certificates.crt; do
    if [ -e "$path" ]; then set -- "$@" --volume "$path:$path:ro"; fi
done
buildah bud "$@" .
