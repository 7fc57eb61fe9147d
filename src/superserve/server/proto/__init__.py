"""Generated Open Inference Protocol (KServe v2) gRPC modules; see gen_proto.py.

Imported lazily through `pb2()` / `pb2_grpc()` so that importing superserve.server does not
load protobuf and grpc unless gRPC is used.
"""

from __future__ import annotations

from types import ModuleType

__all__ = ["pb2", "pb2_grpc"]


def pb2() -> ModuleType:
    from superserve.server.proto import grpc_predict_v2_pb2

    return grpc_predict_v2_pb2


def pb2_grpc() -> ModuleType:
    from superserve.server.proto import grpc_predict_v2_pb2_grpc

    return grpc_predict_v2_pb2_grpc
