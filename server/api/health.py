"""Liveness, readiness, the served-model list, and Prometheus metrics.

`/healthz` is the liveness probe (the process serves HTTP), `/readyz` the readiness probe
(models loaded and not draining); `/metrics` is guarded like the API unless `metrics_open`.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import JSONResponse, Response

from server import metrics
from server.api.gate import authorize

router = APIRouter()
log = logging.getLogger(__name__)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Answers as soon as the process serves HTTP, even while models load."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    engine = request.app.state.engine
    state = request.app.state
    if state.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    if state.load_error:
        return JSONResponse({"status": "failed", "error": state.load_error}, status_code=503)
    if not engine.ready:
        return JSONResponse({"status": "loading"}, status_code=503)
    return JSONResponse({"status": "ready", "models": sorted(engine.pool.served)})


@router.get("/v1/models", dependencies=[Depends(authorize)])
async def models(request: Request) -> dict:
    return request.app.state.engine.describe_models()


@router.get("/metrics")
async def metrics_endpoint(request: Request) -> Response:
    if not request.app.state.settings.metrics_open:
        authorize(request)
    try:
        request.app.state.engine.sample_gauges()
    except Exception:  # NVML missing or broken must not fail the scrape of everything else
        log.debug("gauge sampling failed", exc_info=True)
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)
