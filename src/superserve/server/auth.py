"""Bearer-token authentication for both front ends.

`--auth-token-file F`: one token per line (blank lines and `#` comments ignored). A request
must carry `Authorization: Bearer <token>` (HTTP header, or gRPC metadata `authorization`).
Tokens are compared with `hmac.compare_digest` against every configured token (no early exit,
so the time taken does not say which token, or how much of one, matched). With
`open_health=True` the health endpoints (REST /v2/health/*, gRPC ServerLive/ServerReady) and
/metrics stay open, for probes and scrapers that carry no token; everything else, the infer
fast path included, needs the token.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from superserve.errors import ConfigError, UnauthenticatedError

__all__ = ["Authenticator", "grpc_interceptor", "load_tokens"]

_OPEN_HTTP = ("/v2/health/live", "/v2/health/ready", "/metrics")
_OPEN_GRPC = ("/inference.GRPCInferenceService/ServerLive",
              "/inference.GRPCInferenceService/ServerReady")


def load_tokens(path: str | Path) -> tuple[bytes, ...]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read auth token file {path}: {e}") from None
    tokens = tuple(line.strip().encode() for line in text.splitlines()
                   if line.strip() and not line.strip().startswith("#"))
    if not tokens:
        raise ConfigError(f"auth token file {path} holds no token")
    short = [t for t in tokens if len(t) < 16]
    if short:
        raise ConfigError(f"auth token file {path}: tokens must be at least 16 characters "
                          f"({len(short)} shorter)")
    if any(b" " in t or b"\t" in t for t in tokens):
        raise ConfigError(f"auth token file {path}: a token holds whitespace")
    return tokens


@dataclass(frozen=True)
class Authenticator:
    tokens: tuple[bytes, ...]
    open_health: bool = False  # health endpoints and /metrics need no token

    @classmethod
    def from_file(cls, path: str | Path, open_health: bool = False) -> Authenticator:
        return cls(load_tokens(path), open_health)

    def check(self, authorization: bytes | str | None) -> None:
        """Raise UnauthenticatedError unless `authorization` is `Bearer <a valid token>`."""
        if authorization is None:
            raise UnauthenticatedError("authentication required: send "
                                       "'Authorization: Bearer <token>'")
        if isinstance(authorization, str):
            authorization = authorization.encode("latin-1", "replace")
        scheme, _, token = authorization.strip().partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            raise UnauthenticatedError("authentication required: the Authorization header "
                                       "must be 'Bearer <token>'")
        token = token.strip()
        ok = False
        for t in self.tokens:  # every token compared: no early exit
            ok |= hmac.compare_digest(t, token)
        if not ok:
            raise UnauthenticatedError("invalid bearer token")

    def open_path(self, path: str) -> bool:
        return self.open_health and path in _OPEN_HTTP

    def check_http(self, path: str, headers: Iterable[tuple[bytes, bytes]]) -> None:
        if self.open_path(path):
            return
        value = None
        for k, v in headers:
            if k.lower() == b"authorization":
                value = v
                break
        self.check(value)

    def check_grpc(self, method: str, metadata: Iterable[Any] | None) -> None:
        if self.open_health and method in _OPEN_GRPC:
            return
        value = None
        for item in metadata or ():
            k, v = item[0], item[1]
            if k.lower() == "authorization":
                value = v
                break
        self.check(value)


def grpc_interceptor(auth: Authenticator) -> Any:
    """A grpc.aio server interceptor: calls without a valid token end UNAUTHENTICATED
    before their handler runs (and before their request is even parsed)."""
    import grpc

    class BearerInterceptor(grpc.aio.ServerInterceptor):
        async def intercept_service(self, continuation: Any, details: Any) -> Any:
            try:
                auth.check_grpc(details.method, details.invocation_metadata)
            except UnauthenticatedError as e:
                msg = str(e)

                async def refuse(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED, msg)

                return grpc.unary_unary_rpc_method_handler(refuse)
            return await continuation(details)

    return BearerInterceptor()
