"""`FakeEngine` as a real HTTP server process: both slots' engines, for tests that run the
gateway or the trainer as processes (and kill them) but must not start vLLM.

    python -m twinloop.testing.stub_engine --port 18301 --port 18302

serves one `FakeEngine` on each port (the first is blue, the second green), so they keep
their loaded adapters across the restarts of the processes that call them, as real engines
do. Two control routes let a test hold a moment open: `POST /stub/hold {"path": ...}` makes
requests to that path wait (recorded) until `POST /stub/release {"path": ...}`;
`GET /stub/requests` lists the (slot, path) of every request so far.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import AsyncIterator

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from twinloop.testing.engine import FakeEngine

HOP_BY_HOP = {"content-length", "transfer-encoding", "connection"}


def create_stub_app(engine: FakeEngine) -> Starlette:
    """The engines: a request goes to `engine.handle` with the port it came in on (the slot);
    the control routes are the same on every port."""

    async def hold(request: Request) -> Response:
        path = (await request.json())["path"]
        if path not in engine.held:
            engine.hold(path)
        return JSONResponse({"held": sorted(engine.held)})

    async def release(request: Request) -> Response:
        path = (await request.json())["path"]
        event = engine.held.pop(path, None)
        if event is not None:
            event.set()  # the waiting requests hold the event; new ones pass
        return JSONResponse({"held": sorted(engine.held)})

    async def requests(_: Request) -> Response:
        return JSONResponse([[slot, path] for slot, path, _ in engine.requests])

    async def forward(request: Request) -> Response:
        _, port = request.scope["server"]
        outgoing = httpx.Request(
            request.method,
            f"http://127.0.0.1:{port}{request.url.path}",
            content=await request.body(),
            headers={"content-type": request.headers.get("content-type", "application/json")},
        )
        reply = await engine.handle(outgoing)
        headers = {k: v for k, v in reply.headers.items() if k.lower() not in HOP_BY_HOP}
        if reply.headers.get("content-type", "").startswith("text/event-stream"):
            return StreamingResponse(_body(reply), status_code=reply.status_code, headers=headers)
        return Response(await reply.aread(), status_code=reply.status_code, headers=headers)

    methods = ["GET", "POST", "PUT", "DELETE"]
    return Starlette(
        routes=[
            Route("/stub/hold", hold, methods=["POST"]),
            Route("/stub/release", release, methods=["POST"]),
            Route("/stub/requests", requests, methods=["GET"]),
            Route("/{path:path}", forward, methods=methods),
        ]
    )


async def _body(reply: httpx.Response) -> AsyncIterator[bytes]:
    async for chunk in reply.aiter_raw():
        yield chunk


def serve(ports: list[int], host: str = "127.0.0.1") -> None:
    """Serve one engine per port until SIGTERM; slots are named blue, green, ... by order.

    One server on every port's socket, so a signal stops them all.
    """
    names = ["blue", "green", *(f"slot{i}" for i in range(2, len(ports)))]
    engine = FakeEngine(ports=dict(zip(ports, names, strict=False)))
    sockets = []
    for port in ports:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sockets.append(sock)
    config = uvicorn.Config(create_stub_app(engine), log_level="warning")
    uvicorn.Server(config).run(sockets=sockets)


def main() -> None:  # pragma: no cover - a process that tests start
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, action="append", required=True)
    args = parser.parse_args()
    serve(args.port)


if __name__ == "__main__":  # pragma: no cover
    main()
