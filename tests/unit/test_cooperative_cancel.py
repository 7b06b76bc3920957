"""ctx.cancelled: a sync stage in a thread can tell that its attempt no longer counts."""

from __future__ import annotations

import asyncio
import threading

from stageflow import Engine, Pipeline, RetryPolicy
from stageflow.testing import run_virtual


class TestCooperativeCancellation:
    def test_a_timed_out_thread_sees_cancelled_and_the_next_attempt_does_not(self):
        seen: dict[int, bool] = {}
        first_may_look = threading.Event()

        def work(ctx):
            if ctx.attempt == 1:
                first_may_look.wait(5)  # until the second attempt has begun
                seen[1] = ctx.cancelled
                return {"attempt": 1}
            seen[2] = ctx.cancelled
            first_may_look.set()
            return {"attempt": 2}

        retry = RetryPolicy(attempts=2, backoff="fixed", base=0.0)
        graph = Pipeline().with_stage("w", work, timeout=0.05, retry=retry).build()
        result = asyncio.run(Engine().run(graph))

        assert result["w"].data == {"attempt": 2}
        assert seen == {1: True, 2: False}

    def test_an_async_stage_is_not_cancelled_while_it_runs(self):
        async def look(ctx):
            await asyncio.sleep(1)
            return {"cancelled": ctx.cancelled}

        result = run_virtual(Engine().run(Pipeline().with_stage("a", look).build()))

        assert result["a"].data == {"cancelled": False}

    def test_a_stopping_run_cancels_every_attempt(self):
        contexts = []

        async def slow(ctx):
            contexts.append(ctx)
            await asyncio.sleep(10)

        async def boom(ctx):
            await asyncio.sleep(1)
            raise ValueError("boom")

        graph = Pipeline().with_stage("slow", slow).with_stage("boom", boom).build()
        run_virtual(Engine().run(graph))

        assert [ctx.cancelled for ctx in contexts] == [True]
