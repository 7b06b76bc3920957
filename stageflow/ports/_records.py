"""The values a store keeps: runs, stage outcomes, usage reports and leases."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from .._status import RunStatus, StageStatus


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run as a store keeps it.

    Attributes:
        run_id: the run's id.
        pipeline: the pipeline's name.
        fingerprint: the graph's fingerprint; a resume must present the same one.
        data: the run's initial data, as stageflow's JSON text.
        status: running, completed, failed or cancelled.
        created_at: when the run was created (seconds since the epoch).
        updated_at: when it last changed.
        error: why it failed or was cancelled, in words.
        structure: the graph's stages and dependencies as JSON, to say what changed
            when a resume presents another graph.
        labels: the labels the run was started with (``Engine.run(labels=)``): str to
            str, kept exactly and never changed by the store (e.g. by ``set_status``).
            Not part of the record's hash.
        config: the run's governing configuration as the engine started it, as
            stageflow's JSON text (run budget, prices, model chains, the stages'
            declared budgets and estimates, timeout, max_parallel, fail_fast), which
            ``Engine.resume`` restores and checks; "" for a run recorded without one
            (by an older stageflow). Kept exactly and never changed by the store.
    """

    run_id: str
    pipeline: str
    fingerprint: str
    data: str
    status: RunStatus
    created_at: float
    updated_at: float
    error: str | None = None
    structure: str = ""
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    config: str = ""


@dataclass(frozen=True, slots=True)
class StageRecord:
    """One stage's outcome in a run, as a store keeps it (one row per stage, not a snapshot).

    Attributes:
        run_id: the run.
        stage: the stage's name.
        status: how it ended.
        output: its output data, as stageflow's JSON text.
        attempts: attempts made.
        started: seconds since the run started.
        ended: seconds since the run started.
        reason: why it was skipped or failed, in words.
    """

    run_id: str
    stage: str
    status: StageStatus
    output: str
    attempts: int
    started: float | None
    ended: float | None
    reason: str | None = None


class UsageRecord(NamedTuple):
    """One usage report of a stage, as a store keeps it (one row per report).

    A NamedTuple: a run may report once per stage, and building one costs a tuple.

    Attributes:
        run_id: the run.
        stage: the stage that reported it.
        attempt: the attempt that reported it.
        model: the model it was spent on, or None.
        input_tokens: tokens in.
        output_tokens: tokens out.
        cost: what it cost, or None when unknown.
        at: when it was reported (seconds since the epoch).
    """

    run_id: str
    stage: str
    attempt: int
    model: str | None
    input_tokens: int
    output_tokens: int
    cost: float | None
    at: float


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to drive one run, proved by a fencing token.

    Attributes:
        run_id: the run.
        owner: who holds it (e.g. ``host:pid:uuid``).
        token: grows with every acquisition; a write with an older token is refused.
        expires_at: seconds since the epoch; renew before.
    """

    run_id: str
    owner: str
    token: int
    expires_at: float


@dataclass(frozen=True, slots=True)
class InputRecord:
    """One input of a run (``with_input``), as a store keeps it: declared when the run
    starts, marked waiting when its stage waits, given once.

    Attributes:
        run_id: the run.
        name: the input's name: its stage's, or ``stage[key]`` for one item of an input
            over a list (``with_input(..., over=)``).
        schema: the JSON Schema of its value, as JSON text (what a UI shows, and what a
            sender without the graph validates against).
        prompt: what the person is shown, made from the stage's inputs when it first
            waited; None before that (or when the stage has no prompt).
        deadline: when the wait ends (seconds since the epoch), fixed when the stage
            first waited; None: no deadline (or not waited yet).
        waiting_since: when its stage first waited; None: it has not yet.
        value: the value given, as stageflow's JSON text; None: none yet.
        given_at: when the value was given; None: not yet.
    """

    run_id: str
    name: str
    schema: str
    prompt: str | None = None
    deadline: float | None = None
    waiting_since: float | None = None
    value: str | None = None
    given_at: float | None = None
