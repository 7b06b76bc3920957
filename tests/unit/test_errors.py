"""The error tree: drawn in errors.py and in the docs as it is, and every class pickles.

The tree drawn in ``stageflow/errors.py``'s docstring and in ``docs/concepts.md`` is
checked against the classes themselves (each class, its parent, its builtin bases); and
an instance of every class, built with distinctive values for all its fields, must come
back from ``pickle`` and ``copy`` equal in type, message, args and fields. A new class
fails here until it is drawn and its constructor takes ``(message, *, fields...)``.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import pickle
import pkgutil
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import stageflow
import stageflow.errors
from stageflow import CodecError, Engine, Pipeline, StageflowError
from stageflow.adapters.memory import MemoryStore
from stageflow.errors import LeaseLostError, UnknownModelError, UnknownRunError
from stageflow.testing import run_virtual

DOCS_PAGE = Path(__file__).parents[2] / "docs" / "concepts.md"

# One line of a drawn tree: "│   ├── Name (BuiltinBase)   what it is".
_LINE = re.compile(
    r"(?P<indent>(?:│   |    )*)(?:[├└]── )?(?P<name>\w+)(?: \((?P<bases>[\w, ]+)\))?"
    r"(?: {2,}(?P<what>\S.*))?"
)

Tree = dict[str, tuple[str | None, tuple[str, ...]]]  # name -> (parent, builtin bases)


def _import_the_whole_package() -> None:
    """Every module of stageflow, so that a class defined anywhere in it is seen."""
    for module in pkgutil.walk_packages(stageflow.__path__, "stageflow."):
        if module.name.endswith("__main__"):
            continue
        importlib.import_module(module.name)


def _error_classes() -> list[type[StageflowError]]:
    _import_the_whole_package()
    found: list[type[StageflowError]] = [StageflowError]
    for cls in found:  # grows while walking: breadth first
        for sub in cls.__subclasses__():
            if sub.__module__.split(".")[0] == "stageflow" and sub not in found:
                found.append(sub)
    return found


CLASSES = _error_classes()


def _drawn_block(text: str) -> str:
    """The tree drawn in ``text``: from its ``StageflowError`` line to the first blank one."""
    match = re.search(r"^( *)StageflowError\n(?:\1[│├└ ].*\n?)+", text, re.MULTILINE)
    assert match, "no error tree drawn"
    indent = len(match.group(1))
    return "\n".join(line[indent:] for line in match.group(0).rstrip().splitlines())


def _parse(block: str) -> Tree:
    tree: Tree = {}
    parents: list[str] = []
    for line in block.splitlines():
        match = _LINE.fullmatch(line)
        assert match, f"cannot read the tree line {line!r}"
        depth = len(match["indent"]) // 4 + (1 if line[len(match["indent"])] in "├└" else 0)
        name = match["name"]
        assert name not in tree, f"{name} is drawn twice"
        assert depth == 0 or match["what"], f"{name}: say in a few words what it is"
        del parents[depth:]
        bases = tuple(b.strip() for b in match["bases"].split(",")) if match["bases"] else ()
        tree[name] = (parents[-1] if parents else None, bases)
        parents.append(name)
    return tree


def _actual_tree() -> Tree:
    tree: Tree = {}
    for cls in CLASSES:
        ours = [b for b in cls.__bases__ if issubclass(b, StageflowError)]
        others = tuple(b.__name__ for b in cls.__bases__ if not issubclass(b, StageflowError))
        if cls is StageflowError:
            tree[cls.__name__] = (None, ())
            continue
        assert len(ours) == 1, f"{cls.__name__} has more than one stageflow parent: {ours}"
        tree[cls.__name__] = (ours[0].__name__, others)
    return tree


class TestTheDrawnTree:
    def test_errors_py_draws_every_class_with_its_parent_and_builtin_bases(self) -> None:
        assert _parse(_drawn_block(stageflow.errors.__doc__ or "")) == _actual_tree()

    def test_the_docs_draw_the_same_tree_as_errors_py(self) -> None:
        drawn = _drawn_block(stageflow.errors.__doc__ or "")
        page = DOCS_PAGE.read_text(encoding="utf-8")
        assert f"```text\n{drawn}\n```" in page
        assert _parse(_drawn_block(page)) == _actual_tree()

    def test_every_class_is_exported_from_stageflow_and_stageflow_errors(self) -> None:
        names = sorted(cls.__name__ for cls in CLASSES)
        assert sorted(stageflow.errors.__all__) == names
        for cls in CLASSES:
            assert getattr(stageflow, cls.__name__) is cls
            assert getattr(stageflow.errors, cls.__name__) is cls
            assert cls.__name__ in stageflow.__all__

    def test_the_codec_raises_the_exported_codec_error(self) -> None:
        from stageflow import _codec

        assert _codec.CodecError is CodecError


# --------------------------------------------------------------------------- pickling

# A distinctive value per annotation of a constructor field (str values get the field's
# name, so that two fields never hold the same value). A new annotation needs a row here.
_SAMPLES: dict[str, Callable[[str], Any]] = {
    "str": lambda field: f"{field}-'value'",
    "str | None": lambda field: f"{field}-'value'",
    "int": lambda field: 7,
    "float": lambda field: 2.5,
    "object": lambda field: {"object": [field, 1.5, ("t",)]},
    "Sequence[str]": lambda field: ("alpha", f"{field}-beta", "alpha"),
}


def _constructor_fields(cls: type[StageflowError]) -> list[inspect.Parameter]:
    """The keyword-only fields of ``cls``'s constructor, checking its shape."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert params, f"{cls.__name__}.__init__ takes no message"
    message, *fields = params
    assert (message.name, message.kind) == ("message", inspect.Parameter.POSITIONAL_OR_KEYWORD), (
        f"{cls.__name__}.__init__ must take the message first"
    )
    for field in fields:
        assert field.kind is inspect.Parameter.KEYWORD_ONLY, (
            f"{cls.__name__}.__init__: {field.name} must be keyword-only"
        )
    return fields


def _sample(cls: type[StageflowError]) -> tuple[str, dict[str, Any]]:
    message = f"{cls.__name__}: what went wrong with 'quotes' and \"more\""
    values = {}
    for field in _constructor_fields(cls):
        annotation = field.annotation
        assert annotation in _SAMPLES, (
            f"{cls.__name__}.{field.name}: add a sample value for {annotation!r} to _SAMPLES"
        )
        values[field.name] = _SAMPLES[annotation](field.name)
    return message, values


def _kept(value: Any) -> Any:
    """What a field keeps of the value given: sequences of names become tuples."""
    return tuple(value) if isinstance(value, list | tuple) else value


_COPIES: dict[str, Callable[[Any], Any]] = {
    **{
        f"pickle-{protocol}": lambda e, p=protocol: pickle.loads(pickle.dumps(e, p))
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1)
    },
    "copy": copy.copy,
    "deepcopy": copy.deepcopy,
}


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
class TestEveryClassPickles:
    def test_the_constructor_keeps_every_field_as_an_attribute(
        self, cls: type[StageflowError]
    ) -> None:
        message, fields = _sample(cls)
        error = cls(message, **fields)

        assert str(error) == message
        assert error.args == (message,)
        for name, value in fields.items():
            # UnknownModelError sorts the models it knows
            kept = tuple(sorted(value)) if name == "known" else _kept(value)
            assert getattr(error, name) == kept, f"{cls.__name__}.{name}"

    @pytest.mark.parametrize("how", list(_COPIES))
    def test_a_copy_has_the_type_message_args_and_fields(
        self, cls: type[StageflowError], how: str
    ) -> None:
        message, fields = _sample(cls)
        error = cls(message, **fields)
        error.add_note("a note")

        back = _COPIES[how](error)

        assert type(back) is cls
        assert str(back) == message
        assert back.args == (message,)
        assert repr(back) == repr(error)
        for name in fields:
            assert getattr(back, name) == getattr(error, name), f"{cls.__name__}.{name}"
        assert vars(back) == vars(error)  # derived attributes and notes too
        assert back.__notes__ == ["a note"]


WITH_OF = [cls for cls in CLASSES if hasattr(cls, "of")]


@pytest.mark.parametrize("cls", WITH_OF, ids=lambda c: c.__name__)
def test_of_builds_the_standard_message_with_the_given_fields(cls: type[StageflowError]) -> None:
    _, fields = _sample(cls)
    of = cls.of  # type: ignore[attr-defined]
    params = inspect.signature(of).parameters
    given = {name: fields[name] for name in params if name in fields}
    missing = [n for n, p in params.items() if n not in fields and p.default is p.empty]
    assert missing == [], f"{cls.__name__}.of has arguments that are no fields: {missing}"

    error = of(**given)
    back = pickle.loads(pickle.dumps(error))

    assert type(error) is cls
    assert str(error)
    assert str(back) == str(error)
    for name in given:
        assert getattr(back, name) == getattr(error, name)


class TestMessages:
    def test_a_key_error_keeps_its_message_unquoted_across_pickle(self) -> None:
        back = pickle.loads(pickle.dumps(UnknownRunError.of("r1")))

        assert str(back) == "no run with id 'r1'"
        assert back.run_id == "r1"

    def test_a_timeout_error_is_no_os_error_with_an_errno(self) -> None:
        back = copy.deepcopy(stageflow.StageTimeoutError.of("s", 1.5, 2))

        assert str(back) == "stage 's' timed out after 1.5s (attempt 2)"
        assert back.errno is None
        assert (back.stage, back.timeout, back.attempt) == ("s", 1.5, 2)

    def test_of_writes_the_messages_it_always_wrote(self) -> None:
        assert str(LeaseLostError.of("r", 3)) == (
            "the lease on run 'r' with token 3 was taken over by another driver; this one "
            "may write no more"
        )
        assert str(UnknownModelError.of("m", ["b", "a"])) == (
            "no price for model 'm'; the price table has 'a', 'b' (add it, or give the table "
            "a fallback)"
        )


class UserError(StageflowError):
    """A user's error in the same style: it pickles as the built-in ones do."""

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


def test_a_user_error_in_the_same_style_pickles_with_its_fields() -> None:
    back = pickle.loads(pickle.dumps(UserError("boom", code=3)))

    assert (type(back), str(back), back.code) == (UserError, "boom", 3)


# --------------------------------------------------------------------------- CodecError


class TestCodecErrorNamesTheStage:
    def test_an_output_that_cannot_be_stored_names_its_stage_field_and_type(self) -> None:
        async def odd(ctx: Any) -> Any:
            return {"handle": object()}

        result = run_virtual(
            Engine(store=MemoryStore()).run(Pipeline().with_stage("odd", odd).build())
        )

        error = result["odd"].error
        assert isinstance(error, CodecError)
        assert error.stage == "odd"
        assert error.field == "the output of stage 'odd'['handle']"
        assert error.value_type is object

    def test_a_state_that_cannot_be_stored_names_its_stage(self) -> None:
        async def odd(ctx: Any) -> Any:
            await ctx.state.save({"when": {1: "x"}})

        for engine in (Engine(), Engine(store=MemoryStore())):
            result = run_virtual(engine.run(Pipeline().with_stage("odd", odd).build()))

            error = result["odd"].error
            assert isinstance(error, CodecError)
            assert (error.stage, error.value, error.value_type) == ("odd", 1, int)
            assert error.field == "the state of stage 'odd'['when']"

    def test_the_run_data_that_cannot_be_stored_has_no_stage(self) -> None:
        async def noop(ctx: Any) -> None:
            return None

        graph = Pipeline().with_stage("a", noop).build()
        with pytest.raises(CodecError) as info:
            run_virtual(Engine(store=MemoryStore()).run(graph, data={"x": object()}))

        assert info.value.stage is None
        assert info.value.field == "the run's data['x']"
