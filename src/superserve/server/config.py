"""ServeConfig: every knob of `superserve serve`, validated once. Times in seconds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from superserve.errors import ConfigError
from superserve.scheduling.batching import BatchWaitConfig

__all__ = ["ServeConfig"]


@dataclass(frozen=True)
class ServeConfig:
    model: str = "resnet"  # family name ("resnet", "vit", "ofa_mbv3", ...) or a checkpoint path
    weights: str = ""  # the family's weights (a published OFA file or a SuperServe checkpoint)
    table: str | None = None  # ProfileTable path; None: the shipped table of the family
    policy: str = "slackfit"  # make_policy spec: slackfit, maxacc, maxbatch, clipper:.., infaas
    workers: int = 1  # worker processes (each holds one supernet copy)
    threads_per_worker: int = 1  # torch threads per worker; 1 leaves a core for the router
    host: str = "127.0.0.1"
    http_port: int = 8000  # 0: an ephemeral port
    grpc_port: int = 8001  # 0: an ephemeral port; -1: no gRPC front end
    default_slo_s: float = 0.050  # used when a request names no SLO
    max_queue: int = 1024  # images waiting; beyond it 429 / RESOURCE_EXHAUSTED
    max_images: int = 256  # N per request
    max_body_bytes: int = 16 * 1024 * 1024  # request payload limit (413 / INVALID_ARGUMENT)
    max_image_pixels: int = 36_000_000  # one encoded image's width x height, from its header
    # (server/images.py; 400 / INVALID_ARGUMENT beyond)
    labels_file: str | None = None  # class names, one a line: classification "score:index:label"
    # hand-set planning margins, overrides on top of calibration (off by default)
    overhead_s: float = 0.0  # per-batch reserve added to what calibration learns
    latency_scale: float = 1.0  # the policy plans with profiled latencies x this (>= 1: margin)
    calibrate: bool = True  # learn the real cost of batches online (scheduling/calibration.py)
    calibration_tail: str = "constant"  # the batch reserve: one constant, or linear in the batch
    calibration_quantile: float = 0.9  # the batch reserve: this quantile of observed - fit
    miss_feedback: bool = True  # raise SlackFit's rate-guard headroom while requests miss
    batch_log: str | None = None  # a CSV of every finished batch (RouterConfig.batch_log)
    batch_wait_s: float = BatchWaitConfig.wait_s  # an idle worker's hold for company (0: none)
    # the workers' warm-up at batch sizes beyond the profiled ones stops after this (s)
    warmup_budget_s: float = 30.0
    drain_timeout_s: float = 10.0  # on SIGTERM: how long queued requests may still finish
    device: str = "auto"  # worker device: auto (every visible GPU in turn, else cpu), cpu, cuda
    devices: tuple[str, ...] = ()  # explicit devices; worker i uses devices[i mod n]
    worker_kind: str = "torch"  # torch | profile (sleep the profiled latency) | noop
    backend: str = "local"  # local: worker processes here; ray: Ray actors (runtime/ray_pool.py)
    ray_address: str | None = None  # ray: None starts a local Ray on 127.0.0.1; "auto"; host:port
    ray_cpus_per_worker: float = 1.0  # ray: logical CPUs each worker actor reserves
    worker_gpus: float = 0.0  # ray: GPUs each worker actor reserves
    ray_max_restarts: int = 3  # ray: restarts of one dead actor before it stays gone
    auth_token_file: str | None = None  # bearer tokens, one a line (server/auth.py)
    auth_open_health: bool = False  # health endpoints and /metrics need no token
    tls_cert: str | None = None  # PEM certificate: HTTPS and gRPC over TLS (with tls_key)
    tls_key: str | None = None  # PEM private key of tls_cert
    insecure: bool = False  # allow a non-loopback host without authentication
    request_read_timeout_s: float = 30.0  # a request's headers and body must arrive within it
    keep_alive_timeout_s: float = 30.0  # an idle keep-alive HTTP connection is closed after it
    # an HTTP request's clock starts when its bytes reached the kernel, not when the loop read
    # them (server/rx_wait.py; Linux TCP); False: at the read
    socket_wait: bool = True
    # an HTTP request under the default SLO that is already too late when its last byte is
    # read ends 504 before its body is decoded (InferenceService.refuse_if_late); False: every
    # request is decoded first
    late_at_door: bool = True

    def __post_init__(self) -> None:
        for name in ("workers", "threads_per_worker", "max_queue", "max_images",
                     "max_body_bytes", "max_image_pixels"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")
        for name in ("http_port", "grpc_port"):
            v = getattr(self, name)
            lo = -1 if name == "grpc_port" else 0
            if not (isinstance(v, int) and lo <= v <= 65535):
                raise ConfigError(f"{name} must be an integer port in [{lo}, 65535], got {v!r}")
        if not self.warmup_budget_s >= 0:
            raise ConfigError(f"warmup_budget_s must be >= 0, got {self.warmup_budget_s!r}")
        if not self.default_slo_s > 0:
            raise ConfigError(f"default_slo_s must be > 0, got {self.default_slo_s!r}")
        BatchWaitConfig(wait_s=self.batch_wait_s)  # raises ConfigError when it is invalid
        if not self.overhead_s >= 0:
            raise ConfigError(f"overhead_s must be >= 0, got {self.overhead_s!r}")
        if not 0 < self.latency_scale < 100:
            raise ConfigError(f"latency_scale must be in (0, 100), got {self.latency_scale!r}")
        if not self.drain_timeout_s >= 0:
            raise ConfigError(f"drain_timeout_s must be >= 0, got {self.drain_timeout_s!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")
        from superserve.runtime.devices import check_device

        if not isinstance(self.devices, tuple):
            raise ConfigError(f"devices must be a tuple of device names, got {self.devices!r}")
        for d in self.devices:
            check_device(d)
        if self.worker_kind not in ("torch", "profile", "noop"):
            raise ConfigError(f"worker_kind must be torch, profile or noop, got "
                              f"{self.worker_kind!r}")
        if self.weights and not Path(self.weights).is_file():
            raise ConfigError(f"weights: no file at {self.weights!r}")
        if self.labels_file is not None and not Path(self.labels_file).is_file():
            raise ConfigError(f"labels_file: no file at {self.labels_file!r}")
        if not self.host:
            raise ConfigError("host must not be empty")
        if self.backend not in ("local", "ray"):
            raise ConfigError(f"backend must be local or ray, got {self.backend!r}")
        if not 0 < self.request_read_timeout_s <= 3600:
            raise ConfigError(f"request_read_timeout_s must be in (0, 3600], got "
                              f"{self.request_read_timeout_s!r}")
        if not 0 < self.keep_alive_timeout_s <= 3600:
            raise ConfigError(f"keep_alive_timeout_s must be in (0, 3600], got "
                              f"{self.keep_alive_timeout_s!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert and tls_key go together: pass both or neither")
        from superserve.server.tls import check_exposure

        check_exposure(self.host, self.auth_token_file is not None, self.insecure)
