"""The request lifecycle: cancellation (router, service, HTTP disconnect, gRPC cancel and
deadline), the batch watchdog, poison batches, and no ready worker. Router cases run on a
virtual clock with the fake pool; front-end cases on a real server with a fake pool whose
batches never finish unless released. No timing assertions: bounded waits on conditions."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import numpy as np
import pytest

from conftest import GreedyPolicy, ServerThread, synthetic_table
from superserve.errors import ConfigError, RequestCancelledError, WorkerFailedError
from superserve.runtime.clock import ManualClock
from superserve.runtime.fake import FakePool
from superserve.runtime.router import Router, RouterConfig
from superserve.server.service import grpc_code_name, http_status
from superserve.types import Outcome

IMG = np.zeros((1, 1, 28, 28), dtype=np.float32)


class HangingPool(FakePool):
    """A fake pool whose batches hang (never finish) while `hang` is true; `crash` makes each
    batch kill its worker instead; `fail` makes each one report an error."""

    def __init__(self, *a, hang: bool = False, crash: bool = False, fail: bool = False,
                 **kw) -> None:
        super().__init__(*a, **kw)
        self.hang, self.crash, self.fail = hang, crash, fail
        self.kills = 0

    def submit(self, worker_id, task):
        if self.fail:
            self.fail_next = "poisoned input"
        super().submit(worker_id, task)
        if self.hang:
            self._pending[worker_id].cancel()  # it never answers
        elif self.crash:
            self._pending[worker_id].cancel()
            self.clock.call_at(self.clock.now() + 0.001, lambda: self.kill(worker_id))

    def kill(self, worker_id):
        self.kills += 1
        super().kill(worker_id)


def make(table, pool_cls=FakePool, n_workers=1, **cfg):
    clock = ManualClock()
    pool = pool_cls(table, clock, n_workers=n_workers, restart_s=0.010)
    router = Router(GreedyPolicy(table), pool, clock, RouterConfig(**cfg))
    router.start()
    clock.run_until(0.0)
    return clock, pool, router


def run(coro_fn):
    return asyncio.run(coro_fn())


def images_sent(pool) -> int:
    return sum(len(t.images) for _, t in pool.submitted)


def assert_all_terminal(router, n):
    assert router.open_requests == 0
    assert sum(router.stats.terminal.values()) == router.stats.submitted == n


# ----------------------------------------------------------------------------- cancellation
def test_cancelled_request_ends_cancelled_and_is_never_batched(table):
    async def body():
        clock, pool, router = make(table)
        busy = router.submit(IMG, slo_s=1.0)  # takes the only worker
        queued = router.submit(np.zeros((3, 1, 28, 28), np.float32), slo_s=1.0)
        assert router.queue_depth == 3
        assert router.cancel(queued, "test") is True
        r = queued.result()
        assert r.outcome is Outcome.CANCELLED and isinstance(r.error, RequestCancelledError)
        assert router.cancel(queued) is False  # one terminal state: the second is a no-op
        clock.advance(1.0)
        assert busy.result().outcome is Outcome.COMPLETED
        assert images_sent(pool) == 1  # the cancelled request's 3 images never ran
        assert router.stats.terminal[Outcome.CANCELLED] == 1
        assert_all_terminal(router, 2)
    run(body)


def test_cancel_during_its_batch_drops_the_result_not_the_batch(table):
    async def body():
        clock, pool, router = make(table)
        a = router.submit(IMG, slo_s=1.0)
        assert pool.busy(0)
        router.cancel(a)
        b = router.submit(IMG, slo_s=1.0)
        clock.advance(1.0)
        assert a.result().outcome is Outcome.CANCELLED
        assert b.result().outcome is Outcome.COMPLETED
        assert_all_terminal(router, 2)
    run(body)


def test_awaiting_task_cancelled_counts_cancelled_through_the_service(table):
    from superserve.server.codec import ModelIO
    from superserve.server.service import InferenceService

    async def body():
        _clock, pool, router = make(table, pool_cls=HangingPool)
        pool.hang = True
        svc = InferenceService("resnet", router, table, ModelIO(), 1.0, 1 << 20)
        first = asyncio.ensure_future(svc.infer(IMG, 1.0))
        second = asyncio.ensure_future(svc.infer(IMG, 1.0))
        await asyncio.sleep(0)
        second.cancel()  # queued behind the hung batch: nobody waits for it now
        with pytest.raises(asyncio.CancelledError):
            await second
        assert router.stats.terminal[Outcome.CANCELLED] == 1
        first.cancel()  # in flight
        with pytest.raises(asyncio.CancelledError):
            await first
        assert router.stats.terminal[Outcome.CANCELLED] == 2 and router.open_requests == 0
        assert images_sent(pool) == 1
    run(body)


def test_future_cancelled_without_cancel_still_ends_counted(table):
    async def body():
        clock, _pool, router = make(table)
        ended = []

        class Listener:
            def on_terminal(self, r):
                ended.append(r)

            def on_batch(self, *a): ...

            def on_written(self, *a): ...

            def on_batch_timing(self, *a): ...

        router.listener = Listener()
        router.submit(IMG, slo_s=1.0)
        orphan = router.submit(IMG, slo_s=1.0)
        orphan.cancel()  # a direct caller that gave up without telling the router
        clock.advance(1.0)
        assert router.stats.terminal[Outcome.CANCELLED] == 1
        (r,) = [r for r in ended if r.outcome is Outcome.CANCELLED]
        assert isinstance(r.error, RequestCancelledError) and "by its caller" in str(r.error)
        assert_all_terminal(router, 2)
    run(body)


def test_cancelled_maps_to_499_and_grpc_cancelled():
    e = RequestCancelledError("gone")
    assert http_status(e) == 499 and grpc_code_name(e) == "CANCELLED"


# ----------------------------------------------------------------------------- watchdog
def test_config_validates_watchdog_and_attempts():
    with pytest.raises(ConfigError, match="hang_factor"):
        RouterConfig(hang_factor=0.5)
    with pytest.raises(ConfigError, match="max_batch_attempts"):
        RouterConfig(max_batch_attempts=0)


def test_hung_worker_is_killed_and_its_batch_served_after_restart(table):
    async def body():
        clock, pool, router = make(table, pool_cls=HangingPool)
        pool.hang = True
        fut = router.submit(IMG, slo_s=10.0)
        clock.advance(1.0)  # well within the 2 s floor: not hung yet
        assert not fut.done() and router.stats.hung == 0 and pool.kills == 0
        pool.hang = False  # the replacement worker is healthy
        clock.advance(2.0)
        assert router.stats.hung == 1 and pool.kills == 1
        clock.advance(0.5)  # restart after 10 ms, then the re-queued image is served
        r = fut.result()
        assert r.outcome is Outcome.COMPLETED
        assert router.stats.requeued == 1 and images_sent(pool) == 2
        assert_all_terminal(router, 1)
    run(body)


def test_hung_worker_with_no_deadline_left_answers_its_requests(table):
    async def body():
        clock, pool, router = make(table, pool_cls=HangingPool)
        pool.hang = True
        fut = router.submit(IMG, slo_s=0.5)
        clock.advance(3.0)
        r = fut.result()
        assert r.outcome is Outcome.FAILED and isinstance(r.error, WorkerFailedError)
        assert "hung" in str(r.error) and "deadline" in str(r.error)
        assert pool.kills == 1
        assert_all_terminal(router, 1)
    run(body)


def test_watchdog_keeps_watching_later_batches(table):
    async def body():
        clock, pool, router = make(table, pool_cls=HangingPool, n_workers=2)
        a = router.submit(IMG, slo_s=30.0)
        clock.advance(1.0)
        assert a.result().outcome is Outcome.COMPLETED
        pool.hang = True  # a later batch hangs: the watchdog timer was re-armed for it
        b = router.submit(IMG, slo_s=30.0)
        clock.advance(3.0)
        assert router.stats.hung == 1
        pool.hang = False
        clock.advance(3.0)
        assert b.result().outcome is Outcome.COMPLETED
    run(body)


# ----------------------------------------------------------------------------- poison batches
@pytest.mark.parametrize("mode", ["crash", "fail", "hang"])
def test_poison_batch_is_retried_a_bounded_number_of_times(table, mode):
    async def body():
        clock, pool, router = make(table, pool_cls=HangingPool, max_batch_attempts=3)
        setattr(pool, mode, True)
        fut = router.submit(np.zeros((2, 1, 28, 28), np.float32), slo_s=60.0)
        clock.advance(30.0)
        r = fut.result()
        assert r.outcome is Outcome.FAILED and isinstance(r.error, WorkerFailedError)
        assert "3 batches that failed" in str(r.error) and "not retried" in str(r.error)
        assert len(pool.submitted) == 3  # the first try and two retries, then no more
        assert pool.kills == (0 if mode == "fail" else 3)
        setattr(pool, mode, False)
        ok = router.submit(IMG, slo_s=1.0)  # the workers still serve
        clock.advance(1.0)
        assert ok.result().outcome is Outcome.COMPLETED
        assert_all_terminal(router, 2)
    run(body)


def test_a_failed_batch_once_is_retried_and_served(table):
    async def body():
        clock, pool, router = make(table)
        pool.fail_next = "transient"
        fut = router.submit(IMG, slo_s=0.5)
        clock.advance(0.5)
        assert fut.result().outcome is Outcome.COMPLETED and router.stats.requeued == 1
    run(body)


# ----------------------------------------------------------------------------- front ends
@pytest.fixture
def hung_srv():
    """A real server whose one worker hangs on every batch (the watchdog would only act after
    2 s; these tests finish first or do not care)."""
    s = ServerThread(synthetic_table(),
                     lambda t, c: HangingPool(t, c, n_workers=1, hang=True))
    try:
        yield s
    finally:
        s.close()


def wait_until(cond, timeout_s=10.0):
    end = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.005)


def _body(slo_ms=20_000):
    return json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                                   "data": [0.0] * 784}],
                       "parameters": {"slo_ms": slo_ms}}).encode()


def test_http_client_that_disconnects_ends_cancelled(hung_srv):
    s = hung_srv
    router = s.running.router
    port = s.running.http_port
    socks = []
    for _ in range(2):  # the first is in flight (hung worker), the second queued
        body = _body()
        sk = socket.create_connection(("127.0.0.1", port), timeout=5)
        sk.sendall(b"POST /v2/models/resnet/infer HTTP/1.1\r\nhost: x\r\n"
                   b"content-type: application/json\r\ncontent-length: "
                   + str(len(body)).encode() + b"\r\n\r\n" + body)
        socks.append(sk)
    wait_until(lambda: router.open_requests == 2)
    for sk in socks:
        sk.close()
    wait_until(lambda: router.stats.terminal[Outcome.CANCELLED] == 2)
    assert router.open_requests == 0 and router.queue_depth <= 1  # skipped when reached
    text = s.call(s.running.metrics.render_async()).decode()
    assert 'superserve_requests_total{outcome="cancelled"} 2.0' in text


def test_grpc_call_cancelled_by_its_deadline_ends_cancelled(hung_srv):
    import tritonclient.grpc as tgrpc
    from tritonclient.utils import InferenceServerException

    s = hung_srv
    router = s.running.router
    c = tgrpc.InferenceServerClient(s.grpc)
    try:
        inp = tgrpc.InferInput("input", [1, 1, 28, 28], "FP32")
        inp.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float32))
        with pytest.raises(InferenceServerException) as e:
            # slo_ms far beyond the call's deadline: only the cancellation can end it
            c.infer("resnet", [inp], parameters={"slo_ms": 20_000}, client_timeout=0.3)
        assert "DEADLINE_EXCEEDED" in str(e.value.status())
        wait_until(lambda: router.stats.terminal[Outcome.CANCELLED] == 1)
        assert router.open_requests == 0
    finally:
        c.close()


def test_no_ready_worker_is_503_and_unavailable_at_once():
    import httpx
    import tritonclient.grpc as tgrpc
    from tritonclient.utils import InferenceServerException

    s = ServerThread(synthetic_table(), lambda t, c: FakePool(t, c, n_workers=1,
                                                              restart_s=30.0))
    try:
        s.loop.call_soon_threadsafe(s.running.pool.kill, 0)  # back in 30 s
        wait_until(lambda: s.running.router.ready_workers == 0)
        r = httpx.post(f"{s.http}/v2/models/resnet/infer", content=_body(),
                       headers={"content-type": "application/json"}, timeout=10)
        assert r.status_code == 503 and "no worker is ready" in r.json()["error"]
        assert r.headers["retry-after"] == "1"
        c = tgrpc.InferenceServerClient(s.grpc)
        try:
            inp = tgrpc.InferInput("input", [1, 1, 28, 28], "FP32")
            inp.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float32))
            with pytest.raises(InferenceServerException) as e:
                c.infer("resnet", [inp])
            assert e.value.status() == "StatusCode.UNAVAILABLE"
            assert "no worker is ready" in e.value.message()
        finally:
            c.close()
        assert s.running.router.stats.submitted == 0  # refused before admission
    finally:
        s.close()


def test_grpc_call_cancelled_by_its_client_ends_cancelled(hung_srv):
    import grpc

    from superserve.server import proto

    pb = proto.pb2()
    req = pb.ModelInferRequest(model_name="resnet")
    req.parameters["slo_ms"].double_param = 20_000.0
    req.inputs.add(name="input", datatype="FP32", shape=[1, 1, 28, 28])
    req.raw_input_contents.append(np.zeros((1, 1, 28, 28), np.float32).tobytes())
    router = hung_srv.running.router
    ch = grpc.insecure_channel(hung_srv.grpc)
    try:
        call = proto.pb2_grpc().GRPCInferenceServiceStub(ch).ModelInfer.future(req, timeout=30)
        wait_until(lambda: router.open_requests == 1)
        assert call.cancel()
        wait_until(lambda: router.stats.terminal[Outcome.CANCELLED] == 1)
        assert router.open_requests == 0
    finally:
        ch.close()
