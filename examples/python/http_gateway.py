"""An HTTP gateway: ``POST /infer`` forwards a tensor to Kafka and answers with its result.

One ``AsyncClient`` serves every HTTP request (one background consumer, no
thread per request). Configured by environment (see settings.py):

    KAFKA_BOOTSTRAP=127.0.0.1:9092 uvicorn --app-dir examples/python http_gateway:app

    curl -s localhost:8000/infer -H 'content-type: application/json' \\
        -d '{"values": [0.1, 0.2, 0.3, 0.4], "shape": [4]}'
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import torch
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel
from settings import from_environment

from torchkafka.client import AsyncClient, DeadLettered, RequestTimedOut, TooManyInFlight


class InferBody(BaseModel):
    """A tensor as its values (row-major) and shape; an id makes a retry idempotent.

    The values are cast to the model's dtype (TORCHKAFKA_DTYPE).
    """

    values: list[float]
    shape: list[int]
    id: str | None = None


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """One client for the server's lifetime."""
    pipeline = from_environment()
    app.state.dtype = pipeline.dtype
    async with AsyncClient(
        pipeline.connection,
        pipeline.input_topic,
        pipeline.output_topic,
        pipeline.dead_letter_topic,
        timeout_s=30,
    ) as client:
        app.state.client = client
        yield


app = FastAPI(lifespan=lifespan)


@app.post("/infer")
async def infer(body: InferBody, request: Request) -> dict[str, Any]:
    """The model's outputs for one tensor; 422 if dead-lettered, 504 on timeout, 503 if busy."""
    client: AsyncClient = request.app.state.client
    try:
        tensor = torch.tensor(body.values).reshape(body.shape).to(request.app.state.dtype)
    except RuntimeError as exc:
        raise HTTPException(400, f"values do not fit the shape: {exc}") from exc
    try:
        result = await client.infer({"x": tensor}, id=body.id)
    except DeadLettered as error:
        raise HTTPException(422, {"reason": error.reason, "error": error.error}) from error
    except RequestTimedOut as error:
        raise HTTPException(504, "no result in time; retry with the same id") from error
    except TooManyInFlight as error:
        raise HTTPException(503, "too many requests in flight") from error
    return {
        "id": result.id,
        "outputs": {name: tensor.tolist() for name, tensor in result.outputs.items()},
        "model": {"name": result.model.name, "version": result.model.version},
        "timings_ms": dict(result.timings_ms),
    }
