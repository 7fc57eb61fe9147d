"""The exception tree of SuperServe.

    SuperServeError
    +-- ConfigError (ValueError)        a config or CLI value is out of range
    +-- InvalidSpecError (ValueError)   a subnet spec lies outside the search space
    +-- TraceSpecError (ValueError)     a malformed trace spec or trace file
    +-- TableError (ValueError)         a malformed, mismatched or unsupported ProfileTable
    +-- CheckpointError (ValueError)    a malformed or unsupported checkpoint
    +-- InvalidInputError (ValueError)  a request's payload is wrong (HTTP 400)
    +-- ModelNotFoundError (LookupError) unknown model name (HTTP 404)
    +-- PayloadTooLargeError            request body over the size limit (HTTP 413)
    +-- UnsupportedEncodingError        a Content-Encoding the server cannot decode (HTTP 415)
    +-- UnauthenticatedError            no or a wrong bearer token (HTTP 401)
    +-- OverloadedError                 admission control refused the request (HTTP 429)
    +-- DeadlineExceededError           the request cannot or did not meet its deadline (HTTP 504)
    +-- ShuttingDownError               the server is draining (HTTP 503)
    +-- NoWorkerReadyError              no worker is up to serve the request (HTTP 503)
    +-- WorkerFailedError               a worker failed while serving (HTTP 500 with message)
    +-- RequestCancelledError           its client stopped waiting (HTTP 499, gRPC CANCELLED)

Errors are raised where they are detected and mapped to protocol statuses once, at the edge
(server/). Messages name the offending field and value.
"""

from __future__ import annotations


class SuperServeError(Exception):
    """Base class of every error SuperServe raises on purpose."""


class ConfigError(SuperServeError, ValueError):
    pass


class InvalidSpecError(SuperServeError, ValueError):
    pass


class TraceSpecError(SuperServeError, ValueError):
    pass


class TableError(SuperServeError, ValueError):
    pass


class CheckpointError(SuperServeError, ValueError):
    pass


class InvalidInputError(SuperServeError, ValueError):
    pass


class ModelNotFoundError(SuperServeError, LookupError):
    pass


class PayloadTooLargeError(SuperServeError):
    pass


class UnsupportedEncodingError(SuperServeError):
    pass


class UnauthenticatedError(SuperServeError):
    pass


class OverloadedError(SuperServeError):
    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceededError(SuperServeError):
    pass


class ShuttingDownError(SuperServeError):
    pass


class NoWorkerReadyError(SuperServeError):
    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class WorkerFailedError(SuperServeError):
    pass


class RequestCancelledError(SuperServeError):
    """The client went away (an HTTP disconnect, a gRPC call cancelled or past its deadline)
    before its answer: the request ends as CANCELLED; nobody reads the status."""
