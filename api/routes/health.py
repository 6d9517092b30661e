"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import MetricsDep, ReadinessDep
from twinloop.inference.readiness import ReadinessReport

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


@router.get(
    "/readyz",
    response_model=ReadinessReport,
    responses={503: {"model": ReadinessReport, "description": "Not ready; the report says why."}},
)
async def readyz(readiness: ReadinessDep) -> JSONResponse:
    report = await readiness.check()
    return JSONResponse(report.model_dump(), status_code=200 if report.ready else 503)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(metrics: MetricsDep) -> Response:
    """Prometheus' text exposition format."""
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
