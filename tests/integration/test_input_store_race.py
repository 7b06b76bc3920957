"""Senders in separate processes race to give one input: exactly one wins, every time.

Each sender is a real process (multiprocessing, spawned) with a store of its own on one
SQLite file or PostgreSQL database; a barrier starts them together on each input. Half
the inputs have a row to update (declared), half are items ``stage[key]`` whose row the
winner inserts.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from multiprocessing.synchronize import Barrier

import pytest

from stageflow import InputAlreadyGivenError, RunRecord, RunStatus
from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.ports import InputRecord

pytestmark = pytest.mark.slow  # real processes: a few seconds

SENDERS = 6
NAMES = [*(f"approve{k}" for k in range(5)), *(f"items[doc-{k}]" for k in range(5))]
DECLARED = [*(f"approve{k}" for k in range(5)), "items"]


def send(url: str, sender: int, barrier: Barrier, outcomes: multiprocessing.Queue) -> None:
    """One sender: for each input, wait for the others, then give it once."""

    async def main() -> list[tuple[str, int, str]]:
        store = SQLAlchemyStore(url)
        await store.open()  # connected before the race starts
        said: list[tuple[str, int, str]] = []
        try:
            for name in NAMES:
                barrier.wait(timeout=60)  # all senders at once, on this input
                try:
                    row = await store.give_input("r1", name, f'{{"sender":{sender}}}', 1.0)
                except InputAlreadyGivenError:
                    said.append((name, sender, "already given"))
                else:
                    said.append((name, sender, f"won {row.value}"))
        finally:
            await store.aclose()
        return said

    try:
        outcomes.put(asyncio.run(main()))
    except BaseException as error:  # the parent reports it, with the others' outcomes
        outcomes.put([("", sender, f"{type(error).__name__}: {error}")])
        raise


def test_of_processes_racing_to_give_one_input_exactly_one_wins(backend):
    url, _ = backend

    async def prepare() -> None:
        store = SQLAlchemyStore(url)
        try:
            await store.create_run(RunRecord("r1", "p", "fp", "{}", RunStatus.WAITING, 0.0, 0.0))
            lease = await store.acquire_lease("r1", "driver", 30)
            records = [InputRecord("r1", name, '{"type":"object"}') for name in DECLARED]
            await store.declare_inputs(lease, records)
            await store.release_lease(lease)
        finally:
            await store.aclose()

    async def stored() -> dict[str, InputRecord]:
        store = SQLAlchemyStore(url)
        try:
            return await store.load_inputs("r1")
        finally:
            await store.aclose()

    asyncio.run(prepare())
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(SENDERS)
    queue = spawn.Queue()
    senders = [spawn.Process(target=send, args=(url, k, barrier, queue)) for k in range(SENDERS)]
    for process in senders:
        process.start()
    said = [outcome for _ in senders for outcome in queue.get(timeout=120)]
    for process in senders:
        process.join(timeout=60)
    inputs = asyncio.run(stored())

    assert [p.exitcode for p in senders] == [0] * SENDERS, said
    for name in NAMES:
        outcomes = sorted(text for n, _, text in said if n == name)
        won = [text for text in outcomes if text.startswith("won ")]
        assert len(won) == 1, f"{name}: exactly one sender must win: {outcomes}"
        assert outcomes.count("already given") == SENDERS - 1, f"{name}: {outcomes}"
        assert won == [f"won {inputs[name].value}"], f"{name}: the winner's value is stored"
