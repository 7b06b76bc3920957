"""What LLM assistance of a stage is asked for (``with_stage(assist=...)``) and what an
assistant answers: a verdict on the stage's input, findings on its output, a diagnosis
of its error. Plain frozen values: stored with durable runs, shown, sent in events."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any, Final, TypeAlias

from ._check import number, refuse
from .errors import InvalidOptionError

__all__ = [
    "MODES",
    "POLICIES",
    "AssistOption",
    "AssistUsage",
    "AssistanceConfig",
    "Diagnosis",
    "Findings",
    "Verdict",
    "check_assist",
]

MODES: Final = ("validate", "analyze", "diagnose")
"""``validate``: before the stage runs, its input; ``analyze``: after it completed, its
output; ``diagnose``: after it failed (its retries spent), its error."""
POLICIES: Final = ("block", "warn", "record")
"""What a pre-validation that says "not ok" does: ``block`` fails the stage before it
runs (``AssistanceBlockedError``), ``warn`` logs a warning and runs it, ``record`` only
records the verdict and runs it."""


@dataclasses.dataclass(frozen=True, slots=True)
class AssistUsage:
    """What one assistance call spent: reported to the run's ledger as ``assist:<stage>``."""

    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """A pre-validation's answer: whether the stage's input looks fit, how sure, why."""

    ok: bool
    confidence: float = 1.0
    text: str = ""
    usage: AssistUsage | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Findings:
    """An output analysis's answer: what was found (possibly nothing), how sure, why."""

    findings: tuple[str, ...] = ()
    confidence: float = 1.0
    text: str = ""
    usage: AssistUsage | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Diagnosis:
    """An error diagnosis: its likely cause, a fix, whether a retry may help, how sure."""

    cause: str
    confidence: float = 1.0
    fix: str = ""
    retryable: bool | None = None
    text: str = ""
    usage: AssistUsage | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class AssistanceConfig:
    """One mode of assistance for a stage: ``with_stage(assist=[AssistanceConfig(
    "validate", policy="block", timeout=5)])``; a bare mode name (``assist=("validate",
    "diagnose")``) takes the defaults.

    Args:
        mode: ``"validate"``, ``"analyze"`` or ``"diagnose"``.
        timeout: seconds the assistant has; past them the stage goes on without it.
        policy: for ``validate``: ``"block"``, ``"warn"`` or ``"record"`` (default).
    """

    mode: str
    timeout: float = 10.0
    policy: str = "record"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            refuse("mode", f"one of {', '.join(MODES)}", self.mode)
        number(self.timeout, "timeout", "a number of seconds > 0", gt=0)
        if self.policy not in POLICIES:
            refuse("policy", f"one of {', '.join(POLICIES)}", self.policy)
        if self.policy != "record" and self.mode != "validate":
            refuse("policy", "'record' for analyze and diagnose (only validate blocks or warns)",
                   self.policy)  # fmt: skip


AssistOption: TypeAlias = "str | AssistanceConfig | Sequence[str | AssistanceConfig]"
"""What ``with_stage(assist=)`` takes: a mode, an AssistanceConfig, or several."""


def check_assist(stage: str, option: str, value: object) -> tuple[AssistanceConfig, ...]:
    """``with_stage(assist=)``: a mode, an AssistanceConfig, or several; each mode once."""
    items: Iterable[Any] = (value,) if isinstance(value, str | AssistanceConfig) else (
        value if isinstance(value, list | tuple) else ()
    )  # fmt: skip
    configs: list[AssistanceConfig] = []
    for item in items:
        if isinstance(item, AssistanceConfig):
            configs.append(item)
        elif isinstance(item, str) and item in MODES:
            configs.append(AssistanceConfig(item))
        else:
            raise InvalidOptionError(
                f"stage {stage!r}: assist= takes modes ({', '.join(map(repr, MODES))}) or "
                f"AssistanceConfig objects, not {item!r}",
                stage=stage,
                option=option,
                value=item,
            )
    modes = [c.mode for c in configs]
    if not configs or len(set(modes)) != len(modes):
        raise InvalidOptionError(
            f"stage {stage!r}: assist= needs each mode at most once, and at least one: {value!r}",
            stage=stage,
            option=option,
            value=value,
        )
    return tuple(configs)
