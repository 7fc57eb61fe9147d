"""TLS for both front ends, and the rule that keeps an open server off the network.

`--tls-cert C --tls-key K` (PEM files): uvicorn serves HTTPS with them and gRPC binds a
secure port with the same pair. Binding an address other than loopback with no
`--auth-token-file` is refused unless `--insecure` says it is meant (a server reachable from
the network that anyone can use, or flood, should be a decision, not a default).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from superserve.errors import ConfigError

__all__ = ["check_exposure", "grpc_server_credentials", "is_loopback", "read_pem_pair",
           "uvicorn_ssl_kwargs"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def check_exposure(host: str, has_auth: bool, insecure: bool) -> None:
    if not is_loopback(host) and not has_auth and not insecure:
        raise ConfigError(
            f"refusing to serve on {host!r} without authentication: anyone who can reach it "
            "could use it. Pass --auth-token-file FILE (and --tls-cert/--tls-key), bind "
            "127.0.0.1, or pass --insecure if an open server is really meant")


def read_pem_pair(cert: str, key: str) -> tuple[bytes, bytes]:
    out = []
    for what, path in (("certificate", cert), ("key", key)):
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read TLS {what} {path}: {e}") from None
        if b"-----BEGIN" not in data:
            raise ConfigError(f"TLS {what} {path} is not a PEM file")
        out.append(data)
    return out[0], out[1]


def uvicorn_ssl_kwargs(cert: str | None, key: str | None) -> dict[str, Any]:
    return {} if cert is None else {"ssl_certfile": cert, "ssl_keyfile": key}


def grpc_server_credentials(cert: str | None, key: str | None) -> Any:
    if cert is None or key is None:
        return None
    import grpc

    cert_pem, key_pem = read_pem_pair(cert, key)
    return grpc.ssl_server_credentials([(key_pem, cert_pem)])
