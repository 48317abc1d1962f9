"""``/v1/models`` and ``/v1/providers``: what can be asked for, who serves it, at what price and
in what health. Any valid API key may read them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from app.auth.dependencies import authenticate
from app.auth.service import Principal
from app.catalog import service
from app.catalog.schemas import ModelList, ProviderList
from app.web.deps import RuntimeDep

router = APIRouter(prefix="/v1", tags=["catalog"])

AnyKey = Annotated[Principal, Depends(authenticate)]


@router.get("/models", response_model=ModelList)
async def list_models(_: AnyKey, runtime: RuntimeDep) -> ModelList:
    """Every model with its aliases, the providers serving it and their 1024x1024 price."""
    return service.list_models(runtime)


@router.get("/providers", response_model=ProviderList)
async def list_providers(_: AnyKey, runtime: RuntimeDep) -> ProviderList:
    """Every provider: configured or not, breaker state, observed latency and success rate,
    jobs in flight, and its price per model."""
    return await service.list_providers(runtime)
