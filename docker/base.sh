#!/bin/sh
# Make the images' base from Debian's own packages, without pulling from any image registry:
# mmdebstrap builds a minimal Debian with python3 and venv, and podman imports it into the
# container storage that buildah builds from.
#
# Usage: docker/base.sh [TAG]       (default localhost/openlisten-base:bookworm)
# Needs: mmdebstrap, podman (Debian packages), root or a user namespace.
set -eu

suite="${SUITE:-bookworm}"
tag="${1:-localhost/openlisten-base:$suite}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# minbase + what the Dockerfiles run: python3 -m venv, groupadd/useradd, TLS roots for pip.
# Docs, man pages and translations are left out; apt's lists are dropped after the install.
mmdebstrap --variant=minbase --quiet \
    --include=python3,python3-venv,ca-certificates,passwd \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    "$suite" "$work/rootfs.tar"

podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/sh"]' \
    "$work/rootfs.tar" "$tag" >/dev/null
echo "$tag"
