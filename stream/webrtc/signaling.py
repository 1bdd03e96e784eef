"""HTTP offer/answer signalling (aiohttp): the answering side serves `POST /offer`, the offering
side posts its SDP there and gets the answer back. aiortc gathers every candidate before the SDP is
written (no trickle ICE), so one round trip is the whole exchange.

Issue 7's rules live here: bind 127.0.0.1 unless told otherwise, refuse oversized requests before
reading them, and require a token when one is configured.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypedDict

import aiohttp
from aiohttp import web

from ..errors import StreamError
from .config import SignalingConfig

log = logging.getLogger(__name__)



class Answer(TypedDict):
    """An SDP answer as signalling sends it (the JSON body of the reply to an offer)."""

    sdp: str
    type: str  # "answer"


# the offer is the JSON body a sender posted: "sdp", "type" and what else the endpoint reads (stream, probe ...)
OfferHandler = Callable[[dict[str, Any], web.Request], Awaitable[Answer]]


class SignalingRefused(Exception):
    """Raised by an offer handler to answer with an HTTP error and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _token_of(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[len("Bearer "):]
    return request.query.get("token")


def make_app(cfg: SignalingConfig, on_offer: OfferHandler) -> web.Application:
    """An app whose `POST /offer` calls `on_offer(offer, request)` and returns its answer as JSON.

    The offer is a JSON object with at least `sdp` (str) and `type` ("offer"); anything else in it
    (stream name, stream info) is passed through. The answer is `{"sdp": ..., "type": "answer"}`.
    """

    @web.middleware
    async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > cfg.max_request_bytes:
            return _error(413, f"request too large ({request.content_length} bytes, at most {cfg.max_request_bytes})")
        # the token guards what starts a connection; a page and its scripts are public package data
        if cfg.token is not None and request.method != "GET":
            given = _token_of(request)
            if given is None or not hmac.compare_digest(given.encode(), cfg.token.encode()):
                return _error(401, "missing or wrong token")
        return await handler(request)

    async def offer(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"request too large (at most {cfg.max_request_bytes} bytes)")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "the offer must be a JSON object")
        if not isinstance(body, dict) or body.get("type") != "offer" or not isinstance(body.get("sdp"), str):
            return _error(400, 'the offer must be a JSON object with "sdp" (string) and "type": "offer"')
        try:
            answer = await on_offer(body, request)
        except SignalingRefused as e:
            return _error(e.status, e.reason)
        except StreamError as e:
            return _error(400, str(e))
        return web.json_response(answer)

    app = web.Application(middlewares=[guard], client_max_size=cfg.max_request_bytes)
    app.router.add_post("/offer", offer)
    return app


def _error(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


@dataclass
class RunningSite:
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_site(app: web.Application, host: str, port: int) -> RunningSite:
    """Serve `app` on host:port (port 0: a free one); returns where it listens."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise StreamError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = int(sockets[0].getsockname()[1]) if sockets else port
    return RunningSite(runner, host, bound)


async def post_offer(url: str, offer: dict[str, Any], token: str | None = None, timeout_s: float = 10.0
                     ) -> Answer:
    """Send an offer to a signalling endpoint; returns its answer or raises StreamError with the reason."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http, \
                http.post(url, json=offer, headers=headers) as r:
            text = await r.text()
            try:
                body = json.loads(text) if text else {}
            except json.JSONDecodeError:
                body = {}
            if r.status != 200:
                reason = body.get("error") if isinstance(body, dict) else None
                raise StreamError(f"signalling at {url} refused the offer: HTTP {r.status}: {reason or text[:200]}")
    except aiohttp.ClientError as e:
        raise StreamError(f"cannot reach the signalling endpoint {url}: {e}") from None
    except TimeoutError:
        raise StreamError(f"the signalling endpoint {url} did not answer within {timeout_s:g} s") from None
    if not isinstance(body, dict) or body.get("type") != "answer" or not isinstance(body.get("sdp"), str):
        raise StreamError(f"signalling at {url} sent no SDP answer")
    return {"sdp": body["sdp"], "type": "answer"}
