"""The node's RPC, as bitcoind's: HTTP + JSON on 127.0.0.1, a token in the chain's folder
(readable by its owner alone) that every call must carry, one method per request."""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import secrets
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from ..errors import ShoalError

RPC_FILE = "rpc.json"
MAX_REQUEST = 64 * 1024  # a call's JSON: no method takes more
CALL_TIMEOUT = 600.0  # a client waits this long (generate may mine many blocks)

Method = Callable[[dict[str, Any]], Awaitable[Any]]


class RpcError(ShoalError):
    """A call the node refused, with its one-sentence reason."""


class RpcServer:
    """Serves methods on 127.0.0.1:port (0: any free port), writing where and the token to
    folder/rpc.json while it runs."""

    def __init__(
        self, methods: dict[str, Method], folder: Path, port: int = 0, **published: Any
    ) -> None:
        """published: more to write in rpc.json (the node's own port, for one)."""
        self.methods = methods
        self.published = published
        self.file = folder / RPC_FILE
        self.requested_port = port
        self.port = 0
        self.token = secrets.token_hex(32)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen, then publish the port and the token for the CLI."""
        app = web.Application(client_max_size=MAX_REQUEST)
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.requested_port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ShoalError(
                f"cannot serve the RPC on port {self.requested_port}: {exc.strerror}"
            ) from None
        self.port = int(self._runner.addresses[0][1])
        self._publish()

    def _publish(self) -> None:
        """rpc.json, created readable by its owner only and replaced whole."""
        temporary = self.file.with_name(f".{RPC_FILE}.{os.getpid()}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            json.dump({**self.published, "port": self.port, "token": self.token}, out)
        os.replace(temporary, self.file)

    async def stop(self) -> None:
        """Stop serving and withdraw rpc.json."""
        with contextlib.suppress(FileNotFoundError):
            self.file.unlink()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
        given = offered.encode("utf-8", "surrogateescape")  # any bytes compare, none raise
        if scheme != "Bearer" or not hmac.compare_digest(given, self.token.encode()):
            return web.json_response({"error": "wrong or missing RPC token"}, status=401)
        try:
            call = await request.json()
            name = call["method"]
            params = call.get("params") or {}
            if not isinstance(name, str) or not isinstance(params, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "not a JSON call"}, status=400)
        method = self.methods.get(name)
        if method is None:
            return web.json_response({"error": f"no method {name!r}"}, status=404)
        try:
            result = await method(params)
        except ShoalError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"result": result})


def call(
    folder: Path, method: str, params: dict[str, Any] | None = None, port: int | None = None
) -> Any:
    """Call method on the node whose chain folder is folder (its rpc.json says where and the
    token; port, when given, overrides where); RpcError with the node's reason if it refused,
    ShoalError if no node answers."""
    try:
        published = json.loads((folder / RPC_FILE).read_text(encoding="utf-8"))
        token = str(published["token"])
        port = port or int(published["port"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ShoalError(f"no node is running with its state in {folder.parent.parent}") from None
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/",
        data=json.dumps({"method": method, "params": params or {}}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=CALL_TIMEOUT) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read())["error"]
        except (ValueError, KeyError, TypeError):
            reason = f"the node answered HTTP {exc.code}"
        raise RpcError(str(reason)) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ShoalError(f"the node's RPC on port {port} does not answer: {exc}") from None
    return answer.get("result")
