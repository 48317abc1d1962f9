"""Request-scoped access to the ``Runtime`` and a database session (the edge commits)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.runtime import Runtime


def get_runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_runtime(request: Request) -> Runtime:
    # ``async`` on purpose: FastAPI runs a plain ``def`` dependency in a worker thread, a
    # thread hop per request for what is one attribute read.
    return get_runtime_of(request)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session per request; whatever the endpoint did not commit is rolled back."""
    async with get_runtime_of(request).sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def base_url(request: Request, runtime: Runtime) -> str:
    return runtime.settings.public_base_url or str(request.base_url).rstrip("/")
