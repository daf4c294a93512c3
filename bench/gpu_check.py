"""`make gpu-check`: prove the GPU path in one command, then measure what a GPU host holds.

Steps, each logged to the output folder (`--out`, default gpu-check-out/):

1. setup: on a machine that reaches no package index, the bundle that bench/gpu_bundle.py
   packed (`--bundle .gpu`: wheels, models, corpus) is checked against its manifest, unpacked
   and installed with `pip --no-index`; on a host with PyPI the `cuda` extra is installed.
   CTranslate2 dlopens libcublas.so.12 (its Conv1D no longer needs cuDNN): found in the
   nvidia-cublas-cu12 wheel, the CUDA toolkit, or, where only CUDA 13's cuBLAS exists (the
   lent machines' image), through a folder of links named for 12, which the probe then proves
   or refutes. The command re-runs itself with LD_LIBRARY_PATH set (dlopen reads it at start).
2. probe: CTranslate2 sees the device and its compute types; tiny.en decodes a real clip.
3. tests: the `gpu`-marked tests (tests/test_gpu.py): REST, streams, batching, diarization.
4. image: the CUDA image's entry point through tests/image_check.py, where buildah and a built
   `localhost/openlisten:gpu` exist; else skipped, saying why.
5. table: per model and compute type, a server on the device: REST throughput (audio seconds
   per wall second) at each concurrency, the live streams held at 1x while endpoint p50 <= 1 s
   and interim p50 <= 0.75 s (Deepgram's published streaming targets), a stacked batch of
   windows against the same windows one at a time, and the GPU memory the server holds.

The last line printed is a one-line summary. `--quick` runs every step on the CPU at a small
size (CI's dry run, so this script cannot rot where no GPU is lent).

    make gpu-check [GPU_CHECK_ARGS="--out DIR --models tiny.en,base --budget-s 420"]
    make gpu-check GPU_CHECK_ARGS=--quick
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNPACKED = Path(tempfile.gettempdir()) / "openlisten-gpu"
READY = "OPENLISTEN_GPU_CHECK_SETUP"  # set once setup is done and the command re-ran itself
ENDPOINT_TARGET_S = 1.0
INTERIM_TARGET_S = 0.75


@dataclass
class Report:
    out: Path
    started: float = field(default_factory=time.monotonic)
    steps: dict[str, str] = field(default_factory=dict)
    facts: dict[str, object] = field(default_factory=dict)

    def log(self, name: str, text: str) -> None:
        with (self.out / f"{name}.log").open("a") as fh:
            fh.write(text if text.endswith("\n") else text + "\n")

    def step(self, name: str, verdict: str) -> None:
        self.steps[name] = verdict
        print(f"[{self.elapsed():6.1f} s] {name}: {verdict}", flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def save(self) -> None:
        summary = {"steps": self.steps, **self.facts, "seconds": round(self.elapsed(), 1)}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))


# --- 1. setup ------------------------------------------------------------------------------
def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def unpack_bundle(bundle: Path, report: Report) -> dict[str, str]:
    """Check each part, join, unpack, install the wheels; the environment the rest runs in."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    missing = [p["name"] for p in manifest["parts"] if not (bundle / p["name"]).is_file()]
    bad = [
        p["name"]
        for p in manifest["parts"]
        if p["name"] not in missing and sha256(bundle / p["name"]) != p["sha256"]
    ]
    if missing or bad:
        raise SystemExit(
            f"bundle {bundle}: parts missing {missing or '-'}, damaged {bad or '-'}: carry them "
            "again (one per run call, back to back on the same warm machine)"
        )
    shutil.rmtree(UNPACKED, ignore_errors=True)
    UNPACKED.mkdir(parents=True)
    tar_path = UNPACKED / "bundle.tar"
    with tar_path.open("wb") as dst:
        for part in manifest["parts"]:
            with (bundle / part["name"]).open("rb") as src:
                shutil.copyfileobj(src, dst, 1 << 20)
    with tarfile.open(tar_path) as tar:
        tar.extractall(UNPACKED, filter="data")
    tar_path.unlink()
    site = UNPACKED / "site"
    wheels = sorted(glob.glob(str(UNPACKED / "bundle" / "wheels" / "*.whl")))
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
    pip += ["--no-compile", "--no-cache-dir", "--target", str(site), *wheels]
    done = subprocess.run(pip, capture_output=True, text=True)
    report.log("setup", f"$ pip install --target {site} ({len(wheels)} wheels)\n{done.stdout}")
    report.log("setup", done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"installing the bundle's wheels failed (setup.log): {done.stderr[-500:]}")
    return {
        "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]),
        "OPENLISTEN_CORPUS": str(UNPACKED / "bundle" / "corpus"),
    }


def library_dirs() -> list[Path]:
    roots = [Path(p) for p in sys.path if p] + [Path(p) for p in glob.glob("/usr/local/cuda*")]
    roots += [Path("/usr/lib/x86_64-linux-gnu"), Path("/usr/local/lib")]
    return [r for r in roots if r.is_dir()]


def find_cublas(major: int) -> Path | None:
    """A folder holding libcublas.so.<major> (a pip nvidia wheel, the CUDA toolkit, system)."""
    for root in library_dirs():
        for pattern in (f"libcublas.so.{major}", f"nvidia/**/libcublas.so.{major}"):
            pattern = f"lib64/{pattern}" if root.name.startswith("cuda") else pattern
            hits = glob.glob(str(root / pattern), recursive=True)
            if hits:
                return Path(hits[0]).parent
    return None


def cublas_environment(report: Report, may_install: bool) -> dict[str, str]:
    """LD_LIBRARY_PATH under which CTranslate2's dlopen("libcublas.so.12") succeeds."""
    found = find_cublas(12)
    if found is None and may_install:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "-e", f"{ROOT}[cuda]"],
            capture_output=True,
            text=True,
        )
        report.log("setup", f"$ pip install -e .[cuda]\n{done.stdout}{done.stderr}")
        found = find_cublas(12)
    if found is not None:
        report.facts["cublas"] = f"libcublas.so.12 from {found}"
        return {
            "LD_LIBRARY_PATH": os.pathsep.join([str(found), os.environ.get("LD_LIBRARY_PATH", "")])
        }
    newer = find_cublas(13)
    if newer is None:
        raise SystemExit("no cuBLAS found: install the cuda extra (pip install '.[cuda]')")
    shim = UNPACKED / "cublas12"
    shim.mkdir(parents=True, exist_ok=True)
    for lib in ("libcublas", "libcublasLt"):
        link = shim / f"{lib}.so.12"
        link.unlink(missing_ok=True)
        link.symlink_to(newer / f"{lib}.so.13")
    report.facts["cublas"] = f"CUDA 13 cuBLAS from {newer} under the 12 name ({shim})"
    paths = [str(shim), str(newer), os.environ.get("LD_LIBRARY_PATH", "")]
    return {"LD_LIBRARY_PATH": os.pathsep.join(paths)}


def setup(args: argparse.Namespace, report: Report) -> None:
    """Prepare the environment and re-run this command inside it (once)."""
    env: dict[str, str] = {}
    if args.bundle is not None:
        env |= unpack_bundle(args.bundle, report)
    if not args.quick:
        sys.path[:0] = env.get("PYTHONPATH", "").split(os.pathsep)
        env |= cublas_environment(report, may_install=args.bundle is None)
    report.log("setup", json.dumps(env, indent=1))
    report.step("setup", "ok" + (f" (bundle {args.bundle})" if args.bundle else ""))
    report.save()
    os.execve(
        sys.executable,
        [sys.executable, *sys.argv],
        {**os.environ, **env, READY: json.dumps({"started": report.started, **report.facts})},
    )


# --- 2. probe ------------------------------------------------------------------------------
PROBE = """
import json, sys, time
import ctranslate2
from server.engine.catalog import Catalog
from server.engine.fw import WhisperModel
from server.settings import Settings
from tests import corpus
device, compute = sys.argv[1], sys.argv[2]
out = {"ctranslate2": ctranslate2.__version__, "cuda_devices": ctranslate2.get_cuda_device_count()}
out["compute_types"] = sorted(ctranslate2.get_supported_compute_types(device))
path = Catalog.for_settings(Settings()).materialize("tiny.en")
started = time.perf_counter()
model = WhisperModel(path, device=device, compute_type=compute)
out["load_s"] = round(time.perf_counter() - started, 2)
clip = corpus.by_name("en_cmuarctic_a0024.wav")
for run in range(2):
    started = time.perf_counter()
    segments, _ = model.transcribe(str(clip.path), language="en", beam_size=5)
    text = " ".join(s.text for s in segments)
    out[f"decode_{run}_s"] = round(time.perf_counter() - started, 3)
out["text"], out["wer"] = text.strip(), corpus.wer([clip.reference], [text])
print(json.dumps(out))
"""


def probe(device: str, compute: str, report: Report) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, device, compute],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    report.log("probe", f"$ probe {device} {compute}\n{done.stdout}\n{done.stderr}")
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise StepFailed("probe", f"CTranslate2 could not decode on {device}: {tail[0]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["wer"] > 20:
        raise StepFailed("probe", f"decoded nonsense on {device}: {result['text']!r}")
    return result


class StepFailed(Exception):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step


# --- 3./4. tests and image ------------------------------------------------------------------
def run_tests(device: str, compute: str, quick: bool, report: Report) -> str:
    env = {
        **os.environ,
        "OPENLISTEN_GPU_CHECK": "1",
        "OPENLISTEN_GPU_CHECK_DEVICE": device,
        "OPENLISTEN_GPU_CHECK_COMPUTE": compute,
        "OPENLISTEN_GPU_CHECK_QUICK": "1" if quick else "0",
    }
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-s", "-p", "no:cacheprovider"]
    command += ["-m", "gpu", "tests/test_gpu.py"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    report.log("tests", f"$ {' '.join(command)}\n{done.stdout}\n{done.stderr}")
    last = (done.stdout.strip().splitlines() or ["no output"])[-1].strip("= ")
    if done.returncode != 0:
        raise StepFailed("tests", f"failed: {last} (tests.log)")
    return last


def image_check(report: Report) -> str:
    if shutil.which("buildah") is None:
        return "skipped: no buildah on this machine"
    image = "localhost/openlisten:gpu"
    if subprocess.run(["buildah", "inspect", image], capture_output=True).returncode != 0:
        return f"skipped: {image} not built here (make image-gpu)"
    env = {**os.environ, "OPENLISTEN_IMAGE": image}
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "tests/image_check.py"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    report.log("image", f"{done.stdout}\n{done.stderr}")
    last = (done.stdout.strip().splitlines() or ["no output"])[-1].strip("= ")
    if done.returncode != 0:
        raise StepFailed("image", f"failed: {last} (image.log)")
    return last


# --- 5. table ------------------------------------------------------------------------------
@dataclass
class Sizes:
    rest_levels: list[int]
    live_levels: list[int]
    rest_min_requests: int
    batch_windows: int
    live_clips: list[str]
    short_only: bool = False  # REST and batch from the corpus's short clips (the dry run)


def sizes(args: argparse.Namespace) -> Sizes:
    if args.quick:
        return Sizes([1, 2], [1], 2, 2, ["en_harvard_speechbrain_spk1_snt1.wav"], True)
    return Sizes(
        [int(x) for x in args.rest_levels.split(",")],
        [int(x) for x in args.live_levels.split(",")],
        16,
        16,
        ["en_multispeaker_picovoice_diarization_3spk.wav"],
    )


@dataclass
class ModelRow:
    model: str
    compute: str
    load_s: float
    gpu_mb: float | None
    rss_mb: float
    rest: dict[int, float]
    held: int | None
    live: list[str]
    stacked: str


def english(short_only: bool) -> list:
    from tests import corpus

    clips = corpus.english()
    return [c for c in clips if "short" in c.tags] if short_only else clips


def rest_throughput(url: str, level: int, minimum: int, short_only: bool) -> float:
    """Audio seconds per wall second with `level` requests in flight over the English clips."""
    import asyncio

    from bench.models import post_all

    clips = english(short_only)
    count = max(minimum, 2 * level)
    chosen = [clips[i % len(clips)] for i in range(count)]
    _, wall = asyncio.run(post_all(url, chosen, level, lambda c: {}))
    return sum(c.duration for c in chosen) / wall


def live_ramp(
    ws_url: str, levels: list[int], clips: list[str], deadline: float, notes: list[str]
) -> int | None:
    """Streams at 1x, more each level, while both p50 targets hold; the largest level held."""
    import asyncio

    import numpy as np

    from bench.streaming import Measured, Program, one_stream, pct
    from tests import corpus
    from tests.ws_helpers import samples16k

    audio = [samples16k(corpus.by_name(n).path) for n in clips]
    pause = np.zeros(8000, np.float32)
    program = Program(
        np.concatenate([x for a in audio for x in (a, pause)]),
        " ".join(corpus.by_name(n).reference for n in clips),
    )
    held = None
    for count in levels:
        if time.monotonic() > deadline:
            notes.append(f"{count}: skipped (time budget)")
            break

        async def level(count: int = count) -> list[Measured]:
            spread = min(2.0, 0.1 * count)  # starts spread over up to 2 s, not in lockstep
            return await asyncio.gather(
                *[one_stream(ws_url, program, i * spread / count) for i in range(count)]
            )

        results = asyncio.run(level())
        endpoint = pct([v for r in results for v in r.endpoint], 50)
        interim = pct([v for r in results for v in r.interim], 50)
        unfinished = sum(r.unfinished for r in results)
        wer = corpus.wer([program.reference] * count, [" ".join(r.finals) for r in results])
        ok = endpoint <= ENDPOINT_TARGET_S and interim <= INTERIM_TARGET_S and not unfinished
        notes.append(
            f"{count}: endpoint p50 {endpoint:.2f} s, interim p50 {interim:.2f} s, "
            f"WER {wer:.1f} %{f', {unfinished} cut off' if unfinished else ''}"
            f"{'' if ok else ' (over target)'}"
        )
        if not ok:
            break
        held = count
    return held


def stacked_vs_alone(model: str, device: str, compute: str, windows: int, short_only: bool) -> str:
    """One stacked decode of N windows against the same N decoded one at a time."""
    from server.engine.catalog import Catalog
    from server.engine.models import ModelPool
    from server.engine.whisper import DecodeOptions, decode_batch
    from server.settings import Settings
    from tests.ws_helpers import samples16k

    settings = Settings(device=device, compute_type=compute, workers=1)
    loaded = ModelPool(settings, Catalog.for_settings(settings)).load(model)
    clips = english(short_only)
    audio = [samples16k(clips[i % len(clips)].path) for i in range(windows)]
    options = DecodeOptions(language="en")
    if device == "cuda":
        decode_batch(loaded.model, audio[:1], options)  # kernels and cuBLAS handles first
    started = time.perf_counter()
    for window in audio:
        decode_batch(loaded.model, [window], options)
    alone = time.perf_counter() - started
    started = time.perf_counter()
    decode_batch(loaded.model, audio, options)
    stacked = time.perf_counter() - started
    del loaded
    return (
        f"{windows} windows: {alone:.2f} s alone, {stacked:.2f} s stacked ({alone / stacked:.1f}x)"
    )


def measure_model(
    model: str, compute: str, device: str, size: Sizes, live: bool, deadline: float, report: Report
) -> ModelRow:
    from bench.models import gpu_memory_mb, memory_mb
    from tests.conftest import start_server

    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    started = time.perf_counter()
    env = {"OPENLISTEN_WS_MAX_STREAMS": "1024", "OPENLISTEN_QUEUE_MAX": "8192"}
    args = ["--model", model, "--device", device, "--compute-type", compute]
    server = start_server(tmp, *args, env=env, ready_timeout=300)
    load_s = time.perf_counter() - started
    gpu = [gpu_memory_mb(server.process.pid)]
    try:
        rest = {}
        for level in size.rest_levels:
            rest[level] = rest_throughput(
                server.url, level, size.rest_min_requests, size.short_only
            )
            gpu.append(gpu_memory_mb(server.process.pid))
        notes: list[str] = []
        held = None
        if live:
            held = live_ramp(server.ws_url, size.live_levels, size.live_clips, deadline, notes)
            gpu.append(gpu_memory_mb(server.process.pid))
        rss = memory_mb(server.process.pid)
    finally:
        server.stop()
        for log in tmp.glob("server-*.log"):
            report.log("servers", f"--- {model} {compute} {log.name}\n{log.read_text()[-20000:]}")
    stacked = stacked_vs_alone(model, device, compute, size.batch_windows, size.short_only)
    known = [g for g in gpu if g is not None]
    return ModelRow(
        model, compute, load_s, max(known) if known else None, rss, rest, held, notes, stacked
    )


def render(rows: list[ModelRow], device: str, size: Sizes, facts: dict) -> str:
    head = " | ".join(f"REST {n} req (audio s/s)" for n in size.rest_levels)
    lines = [
        f"| model | compute | load s | GPU MiB | RSS MiB | {head} | streams held | stacked batch |",
        "|" + "---|" * (7 + len(size.rest_levels)),
    ]
    for r in rows:
        rest = " | ".join(f"{r.rest[n]:.1f}" for n in size.rest_levels)
        held = "—" if not r.live else (str(r.held) if r.held else "none")
        gpu = f"{r.gpu_mb:.0f}" if r.gpu_mb is not None else "—"
        lines.append(
            f"| {r.model} | {r.compute} | {r.load_s:.1f} | {gpu} | {r.rss_mb:.0f} | {rest} | "
            f"{held} | {r.stacked} |"
        )
    lines.append("")
    lines.append(
        f"streams held: the most live streams at 1x (levels {size.live_levels}) with endpoint "
        f"p50 <= {ENDPOINT_TARGET_S} s and interim p50 <= {INTERIM_TARGET_S} s, nothing cut off."
    )
    for r in rows:
        for note in r.live:
            lines.append(f"- {r.model} {r.compute}, {note}")
    lines.append("")
    lines.append("```")
    lines.append(json.dumps({k: v for k, v in facts.items() if k != "rows"}, indent=1, default=str))
    lines.append("```")
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every step on the CPU, small")
    parser.add_argument("--out", type=Path, default=ROOT / "gpu-check-out")
    parser.add_argument("--bundle", type=Path, help="a bench/gpu_bundle.py folder (.gpu)")
    parser.add_argument("--models", default="tiny.en,base")
    parser.add_argument("--compute-types", default="float16,int8_float16")
    parser.add_argument("--rest-levels", default="1,8,32,64")
    parser.add_argument("--live-levels", default="16,64,160")
    parser.add_argument("--budget-s", type=float, default=360, help="no live level starts later")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    resumed = os.environ.get(READY)
    report = Report(args.out)
    if resumed is None:
        for old in args.out.glob("*.log"):
            old.unlink()
        try:
            setup(args, report)  # re-runs this command; returns only by raising
        except SystemExit as exc:
            report.step("setup", f"FAILED: {exc}")
            report.save()
            print(f"gpu-check FAILED at setup: {exc}")
            return 1
    state = json.loads(resumed)
    report.started = state.pop("started")
    report.facts |= state
    report.steps["setup"] = "ok"
    device, types = ("cpu", ["int8"]) if args.quick else ("cuda", args.compute_types.split(","))
    models = args.models.split(",")
    if args.bundle is not None:  # only the models the bundle carries
        carried = json.loads((args.bundle / "manifest.json").read_text()).get("models", models)
        models = [m for m in models if m in carried]
    if args.quick:
        models = models[:1]
    report.facts["device"] = device_name(device)
    rows: list[ModelRow] = []
    try:
        result = probe(device, types[0], report)
        report.facts["probe"] = result
        report.step("probe", f"ok: {result['text'][:60]!r} in {result['decode_1_s']} s")
        report.step("tests", run_tests(device, types[0], args.quick, report))
        report.step("image", image_check(report))
        size = sizes(args)
        deadline = report.started + args.budget_s
        for model in models:
            for index, compute in enumerate(types):
                try:
                    row = measure_model(model, compute, device, size, index == 0, deadline, report)
                except Exception as exc:  # one model failing must not lose the others' rows
                    report.log("servers", f"--- {model} {compute}: {exc!r}")
                    report.step(f"table {model} {compute}", f"FAILED: {str(exc)[-300:]}")
                    continue
                rows.append(row)
                report.step(f"table {model} {compute}", "ok")
    except StepFailed as exc:
        report.step(exc.step, f"FAILED: {exc}")
    table = render(rows, device, sizes(args), report.facts)
    (args.out / "table.md").write_text(table + "\n")
    report.facts["rows"] = [row.__dict__ for row in rows]
    report.save()
    print(table)
    failed = [name for name, verdict in report.steps.items() if verdict.startswith("FAILED")]
    best = ", ".join(
        f"{r.model} {r.compute} {max(r.rest.values()):.0f} audio s/s"
        + (f", {r.held or 0} streams held" if r.live else "")
        for r in rows
    )
    verdict = f"FAILED at {failed[0]}" if failed else "PASS"
    print(
        f"gpu-check {verdict} on {report.facts['device']} in {report.elapsed():.0f} s: "
        f"{report.steps.get('tests', 'tests not run')}; {best or 'no table'}; {args.out}"
    )
    return 1 if failed else 0


def device_name(device: str) -> str:
    if device == "cpu":
        return f"CPU ({os.cpu_count()} cores)"
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "cuda (nvidia-smi missing)"


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
