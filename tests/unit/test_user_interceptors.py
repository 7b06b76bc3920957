"""A user can write what the built-ins are: budget and checkpoint interceptors.

``user_interceptors.py`` holds a budget and a checkpoint interceptor written with
public names only. Here the built-ins' own behavioural test classes run again, on
engines where those user interceptors take the built-ins' place the way a user
would put them there: ``Engine(interceptors=[...], without={"budget", "checkpoint"})``.

A few tests are about the built-in classes themselves (their chain position, how
they are configured); they are not inherited here.
"""

from __future__ import annotations

from typing import Any

import pytest

from stageflow import BudgetInterceptor, CheckpointInterceptor, Engine

from . import test_budgets, test_durable_runs, test_usage
from .user_interceptors import UserBudget, UserCheckpoint


def user_engine(**options: Any) -> Engine:
    """An Engine whose budget and checkpoint interceptors are the user's."""
    interceptors = list(options.pop("interceptors", ()))
    without = set(options.pop("without", ()))
    interceptors.append(UserBudget(options.get("budget")))
    without.add("budget")
    if options.get("store") is not None:
        interceptors.append(UserCheckpoint())
        without.add("checkpoint")
    engine = Engine(interceptors=interceptors, without=without, **options)
    builtins = [
        ic
        for ic in engine.interceptors
        if isinstance(ic, BudgetInterceptor | CheckpointInterceptor)
    ]
    assert builtins == []  # the user's interceptors do the work, alone
    return engine


@pytest.fixture(autouse=True)
def _users_interceptors(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (test_budgets, test_durable_runs, test_usage):
        monkeypatch.setattr(module, "Engine", user_engine)


class TestUserBudgetIssuesCase(test_budgets.TestTheIssuesCase):
    pass


class TestUserBudgetDowngrades(test_budgets.TestDowngrades):
    pass


class TestUserBudgetWarnings(test_budgets.TestWarnings):
    pass


class TestUserBudgetStageBudgets(test_budgets.TestStageBudgets):
    pass


class TestUserBudgetPolicies(test_budgets.TestPolicies):
    pass


class TestUserBudgetReservations(test_budgets.TestReservations):
    pass


class TestUserBudgetSyncStages(test_budgets.TestSyncStages):
    pass


class TestUserCheckpointing(test_durable_runs.TestCheckpointing):
    pass


class TestUserCheckpointResume(test_durable_runs.TestResume):
    pass


class TestUserCheckpointLeases(test_durable_runs.TestLeases):
    pass


class TestUserCheckpointStageState(test_durable_runs.TestStageState):
    pass


class TestUserCheckpointResumingACompletedRun(test_durable_runs.TestResumingACompletedRun):
    pass


class TestUserCheckpointStoredUsage(test_usage.TestStoredUsage):
    pass
