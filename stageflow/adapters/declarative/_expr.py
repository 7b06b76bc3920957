"""``$`` references and CEL expressions: parsed and checked at load, evaluated per stage.

A reference names a value: ``$inputs.name``, ``$stage.field[0]``, ``$item``,
``$loop.iteration``, ``$output.score``. In an expression each reference becomes one CEL
variable, resolved in Python (so ids with hyphens work, and a reference into an output
model is typed); the expression is compiled by Google's CEL (``cel-expr-python``), which
type-checks it, and never by Python ``eval``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from ...errors import ExpressionError, MissingInputError

__all__ = [
    "MAX_COST",
    "MAX_DEPTH",
    "MAX_EXPRESSION",
    "MAX_NESTED_MACROS",
    "ROOTS",
    "Expression",
    "ExpressionProblem",
    "Ref",
    "Scope",
    "parse_ref",
]

MAX_EXPRESSION = 4096
"""The longest expression (characters)."""
MAX_DEPTH = 32
"""The deepest nesting of brackets and parentheses in an expression."""
MAX_NESTED_MACROS = 2
"""The deepest nesting of comprehensions (``all``, ``exists``, ``exists_one``, ``map``,
``filter``) in an expression."""
MAX_COST = 10_000
"""The most comprehension iterations an evaluation may take (CEL's own budget, which
cel-expr-python enforces too): with comprehensions nested ``d`` deep over values holding
``n`` elements in all (a string counts one per 100 characters), an evaluation is refused
before it starts when ``n + n**2 + ... + n**d`` exceeds it."""

ROOTS = ("inputs", "item", "loop", "output", "params")
"""Reference roots that are not stage ids (a stage may not be named so)."""

_NAME = r"[A-Za-z_][A-Za-z0-9_\-]*"
_STEP = r"(?:\.[A-Za-z_][A-Za-z0-9_]*|\[\s*\d+\s*\]|\[\s*\"[^\"]*\"\s*\]|\[\s*'[^']*'\s*\])"
_WHOLE = re.compile(rf"\$({_NAME})({_STEP}*)")
_STEPS = re.compile(rf"{_STEP}")
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})


@dataclass(frozen=True, slots=True)
class Ref:
    """A ``$`` reference: its root (a stage id or one of :data:`ROOTS`) and the path
    of fields and indexes after it."""

    root: str
    path: tuple[str | int, ...]
    text: str


def _steps(text: str) -> tuple[str | int, ...]:
    path: list[str | int] = []
    for step in _STEPS.findall(text):
        if step.startswith("."):
            path.append(step[1:])
        else:
            inner = step[1:-1].strip()
            path.append(int(inner) if inner.isdigit() else inner[1:-1])
    return tuple(path)


def parse_ref(text: str) -> Ref | None:
    """The reference a whole string is (``"$fetch-docs.items[0]"``), or None if it is none."""
    match = _WHOLE.fullmatch(text)
    if match is None:
        return None
    return Ref(match[1], _steps(match[2]), text)


class ExpressionProblem(Exception):  # carried to the loader, which places it
    """A reference or an expression is invalid; ``offset`` is where in its text."""

    def __init__(self, message: str, offset: int = 0) -> None:
        super().__init__(message)
        self.offset = offset


# --------------------------------------------------------------------------- scope


@dataclass(slots=True)
class Scope:
    """What references of one stage may name, known when the file loads.

    Attributes:
        stage: the stage the references are in.
        stages: ids that may be referenced -> their output model (None: untyped).
        inputs: declared run inputs -> (CEL type name, default or ``_REQUIRED``).
        item: in a map (``$item``).
        loop: in a loop's body (``$loop``).
        output: ``$output`` is bound (a route's own output, a loop's iteration output).
        referenced: filled in: the stage ids referenced, in order.
    """

    stage: str
    stages: Mapping[str, type[Any] | None]
    inputs: Mapping[str, tuple[str, Any]]
    item: bool = False
    loop: bool = False
    output: bool = False
    referenced: list[str] = field(default_factory=list)


REQUIRED: Any = object()

_CEL_TYPES = {str: "string", int: "int", float: "double", bool: "bool", bytes: "bytes"}


def _cel_type(annotation: Any) -> str:
    if annotation in _CEL_TYPES:
        return _CEL_TYPES[annotation]
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, Sequence):
        return "list"
    if origin in (dict, Mapping) or _model_fields(annotation) is not None:
        return "map"
    return "dyn"


def _model_fields(model: Any) -> Mapping[str, Any] | None:
    if isinstance(model, type) and issubclass(model, BaseModel):
        return {name: f.annotation for name, f in model.model_fields.items()}
    if isinstance(model, type) and dataclasses.is_dataclass(model):
        hints = typing.get_type_hints(model)
        return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(model)}
    return None


def _did_you_mean(word: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_ref(ref: Ref, scope: Scope) -> str:
    """Check ``ref`` against ``scope``; return the CEL type of its value.

    Raises:
        ExpressionProblem: the root or a field of a typed output is unknown.
    """
    root, path = ref.root, ref.path
    if root == "params":
        raise ExpressionProblem(f"{ref.text}: unknown template parameter {path[:1]!r}")
    if root == "inputs":
        if not path or not isinstance(path[0], str):
            raise ExpressionProblem(f"{ref.text}: name an input ($inputs.<name>)")
        if path[0] not in scope.inputs:
            known = sorted(scope.inputs)
            raise ExpressionProblem(
                f"{ref.text}: unknown input {path[0]!r}{_did_you_mean(path[0], known)}; the "
                f"file declares {', '.join(map(repr, known)) or 'no inputs'} (under inputs:)"
            )
        return scope.inputs[path[0]][0] if len(path) == 1 else "dyn"
    if root == "item":
        if not scope.item:
            raise ExpressionProblem(f"{ref.text}: $item is only in a map stage (over:)")
        return "dyn"
    if root == "loop":
        if not scope.loop:
            raise ExpressionProblem(f"{ref.text}: $loop is only in a loop's body")
        if not path or path[0] not in ("iteration", "previous"):
            raise ExpressionProblem(f"{ref.text}: $loop has .iteration and .previous")
        return "int" if path == ("iteration",) else "dyn"
    if root == "output":
        if not scope.output:
            raise ExpressionProblem(
                f"{ref.text}: $output is only in a route's when: (the stage's own output) and a "
                "loop's until: (the iteration's output)"
            )
        return "map" if not path else "dyn"
    if root not in scope.stages:
        known = sorted(scope.stages)
        raise ExpressionProblem(f"{ref.text}: unknown stage {root!r}{_did_you_mean(root, known)}")
    if root == scope.stage:
        raise ExpressionProblem(f"{ref.text}: a stage cannot read its own output")
    if root not in scope.referenced:
        scope.referenced.append(root)
    model = scope.stages[root]
    kind = "map"
    for step in path:
        fields = _model_fields(model) if model is not None else None
        if isinstance(step, int):
            if model is not None and kind != "list":
                raise ExpressionProblem(f"{ref.text}: [{step}] indexes no list")
            args = typing.get_args(model) if model is not None else ()
            model = args[0] if args else None
            kind = _cel_type(model) if model is not None else "dyn"
            continue
        if fields is not None:
            if step not in fields:
                raise ExpressionProblem(
                    f"{ref.text}: the output of {root!r} ({getattr(model, '__name__', model)}) "
                    f"has no field {step!r}{_did_you_mean(step, sorted(fields))}; it has "
                    f"{', '.join(map(repr, fields))}"
                )
            model = fields[step]
            kind = _cel_type(model)
        else:
            model, kind = None, "dyn"
    return kind if path else "map"


# --------------------------------------------------------------------------- resolving


def _walk(value: Any, path: Sequence[str | int], start: int, ref: Ref, stage: str) -> Any:
    for i in range(start, len(path)):
        step = path[i]
        try:
            if isinstance(step, str) and _is_record(value):  # a model's field, never a dunder
                value = getattr(value, step) if not step.startswith("_") else value[step]
            else:
                value = value[step]
        except (KeyError, IndexError, TypeError, AttributeError):
            where = "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in path[:i])
            raise MissingInputError(
                f"stage {stage!r}: {ref.text}: ${ref.root}{where} has no "
                f"{'item ' + str(step) if isinstance(step, int) else repr(step)} "
                f"(it is {_short(value)})",
                stage=stage,
                dependency=ref.root,
                key=str(step),
            ) from None
    return value


def _is_record(value: Any) -> bool:
    """A pydantic model or a dataclass instance: fields read as attributes."""
    return isinstance(value, BaseModel) or (
        dataclasses.is_dataclass(value) and not isinstance(value, type)
    )


def _plain(value: Any) -> Any:
    """``value`` with models and dataclasses as dicts (what CEL takes)."""
    if type(value) in _SCALARS:
        return value
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


Getter = Callable[[Any, Any], Any]  # (ctx, bound $output) -> value


def resolver(ref: Ref, scope: Scope, defaults: Mapping[str, Any] | None = None) -> Getter:
    """A function ``(ctx, output) -> value`` reading ``ref`` when a stage runs."""
    root, path, stage = ref.root, ref.path, scope.stage
    if root == "inputs":
        name = path[0]
        default = scope.inputs[name][1]  # type: ignore[index]

        def get_input(ctx: Any, output: Any) -> Any:
            data = ctx.data
            if name in data:
                value = data[name]
            elif default is not REQUIRED:
                value = default
            else:
                raise MissingInputError(
                    f"stage {stage!r}: {ref.text}: the run's data has no {name!r} (a required "
                    "input of the pipeline)",
                    stage=stage,
                    dependency="inputs",
                    key=str(name),
                )
            return _walk(value, path, 1, ref, stage) if len(path) > 1 else value

        return get_input
    if root == "item":
        return lambda ctx, output: _walk(ctx.item, path, 0, ref, stage)
    if root == "loop":

        def get_loop(ctx: Any, output: Any) -> Any:
            info = ctx.loop
            head = info.iteration if path[0] == "iteration" else info.previous
            return _walk(head, path, 1, ref, stage)

        return get_loop
    if root == "output":
        return lambda ctx, output: _walk(output, path, 0, ref, stage)

    def get_output(ctx: Any, output: Any) -> Any:
        inputs = ctx.inputs
        if root not in inputs:
            raise MissingInputError(
                f"stage {stage!r}: {ref.text}: stage {root!r} did not complete (a branch not "
                "taken, or an optional dependency that failed), so it has no output",
                stage=stage,
                dependency=root,
                key=str(path[0]) if path else None,
            )
        return _walk(inputs[root], path, 0, ref, stage)

    return get_output


# --------------------------------------------------------------------------- CEL


def _scan(text: str) -> tuple[list[tuple[int, int]], int, int]:
    """The spans of ``$`` references outside string literals, the deepest bracket
    nesting and the deepest comprehension nesting."""
    refs: list[tuple[int, int]] = []
    stack: list[bool] = []  # per open bracket: is it a comprehension's call?
    depth = macros = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "'\"" or (c in "rRbB" and i + 1 < n and text[i + 1] in "'\""):
            i = _skip_string(text, i)
            continue
        if c == "$":
            match = _WHOLE.match(text, i)
            if match is None:
                raise ExpressionProblem("a $ that starts no reference ($stage.field)", i)
            end = match.end()
            call = re.search(r"\.[A-Za-z_][A-Za-z0-9_]*$", text[i:end])
            if call is not None and text[end:].lstrip().startswith("("):
                end = i + call.start()  # $x.words.exists(w, ...): .exists is a method call
            refs.append((i, end))
            i = end
            continue
        if c in "([{":
            word = re.search(r"\.\s*([A-Za-z_]\w*)\s*$", text[max(0, i - 40) : i])
            stack.append(c == "(" and word is not None and word[1] in _MACROS)
            depth = max(depth, len(stack))
            macros = max(macros, sum(stack))
        elif c in ")]}" and stack:
            stack.pop()
        i += 1
    return refs, depth, macros


def _skip_string(text: str, i: int) -> int:
    raw = text[i] in "rR"
    if text[i] in "rRbB":
        i += 1
        if text[i] in "rR":
            raw = True
    quote = text[i : i + 3] if text[i : i + 3] in ("'''", '"""') else text[i]
    j = i + len(quote)
    while j < len(text):
        if not raw and text[j] == "\\":
            j += 2
            continue
        if text.startswith(quote, j):
            return j + len(quote)
        j += 1
    raise ExpressionProblem("a string that does not end", i)


def _longest_id(ref: Ref, scope: Scope) -> Ref:
    """``$a-b`` in an expression: the longest stage id it starts with (``-`` may be minus)."""
    name = ref.root
    if name in ROOTS or name in scope.stages:
        return ref
    while "-" in name:
        name = name[: name.rindex("-")]
        if name in scope.stages:
            return Ref(name, (), "$" + name)
    return ref


_ENVS: dict[tuple[tuple[str, str], ...], Any] = {}
_PROGRAMS: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}


def _cel() -> Any:
    from cel_expr_python import cel  # type: ignore[import-untyped]

    return cel


@functools.cache
def _error_type() -> Any:
    return _cel().Type.ERROR


def _type(cel: Any, name: str) -> Any:
    t = cel.Type
    return {
        "string": t.STRING, "int": t.INT, "double": t.DOUBLE, "bool": t.BOOL, "bytes": t.BYTES,
        "list": t.List(t.DYN), "map": t.Map(t.STRING, t.DYN), "dyn": t.DYN,
    }[name]  # fmt: skip


def _compile(text: str, variables: tuple[tuple[str, str], ...]) -> Any:
    key = (text, variables)
    program = _PROGRAMS.get(key)
    if program is None:
        cel = _cel()
        env = _ENVS.get(variables)
        if env is None:
            env = cel.NewEnv(variables={name: _type(cel, kind) for name, kind in variables})
            _ENVS[variables] = env
        program = env.compile(text)
        _PROGRAMS[key] = program
    return program


_CEL_ERROR = re.compile(r"<input>:(\d+):(\d+): (.*?)(?:\n|$)")
_MEMO_SIZE = 1024
_HASHABLE = frozenset({str, int, bool, type(None)})
_SCALARS = frozenset({str, int, bool, float, type(None)})


class Expression:
    """A compiled CEL expression of one stage, with its references.

    ``evaluate(ctx, output)`` resolves the references, checks the cost bound and runs
    the program; the result of an evaluation is kept for the same scalar values (CEL
    is pure: the same values give the same result).
    """

    __slots__ = ("_by_type", "_getters", "_memo", "_names", "_one", "_program", "_sized",
                 "cel_type", "field", "stage", "text")  # fmt: skip

    def __init__(self, text: str, scope: Scope, field: str, *, expect: str | None = None) -> None:
        self.text = text
        self.stage = scope.stage
        self.field = field
        if len(text) > MAX_EXPRESSION:
            raise ExpressionProblem(
                f"the expression is {len(text)} characters long, more than {MAX_EXPRESSION}"
            )
        if not text.strip():
            raise ExpressionProblem("the expression is empty")
        spans, depth, macros = _scan(text)
        if depth > MAX_DEPTH:
            raise ExpressionProblem(f"the expression nests {depth} brackets deep, more than "
                                    f"{MAX_DEPTH}")  # fmt: skip
        if macros > MAX_NESTED_MACROS:
            raise ExpressionProblem(
                f"the expression nests comprehensions {macros} deep, more than "
                f"{MAX_NESTED_MACROS} (all, exists, exists_one, map, filter)"
            )
        names: dict[str, str] = {}
        getters: list[Getter] = []
        kinds: list[tuple[str, str]] = []
        pieces: list[str] = []
        shifts: list[tuple[int, int, int, int]] = []  # a variable's span: rewritten, original
        last = 0
        for start, stop in spans:
            ref = parse_ref(text[start:stop])
            assert ref is not None  # the span is a match of the same pattern
            shorter = _longest_id(ref, scope)
            end = start + len(shorter.text) if shorter is not ref else stop
            ref = shorter
            try:
                kind = check_ref(ref, scope)
            except ExpressionProblem as problem:
                problem.offset = start
                raise
            variable = names.get(ref.text)
            if variable is None:
                variable = f"_r{len(names)}"
                names[ref.text] = variable
                getters.append(resolver(ref, scope))
                kinds.append((variable, kind))
            pieces.append(text[last:start])
            at = sum(map(len, pieces))
            shifts.append((at, at + len(variable), start, end))
            pieces.append(variable)
            last = end
        pieces.append(text[last:])
        rewritten = "".join(pieces)
        try:
            self._program = _compile(rewritten, tuple(kinds))
        except RuntimeError as error:
            raise _problem(str(error), rewritten, shifts, names) from None
        returned = self._program.return_type().name().lower()
        self.cel_type = returned
        if expect == "bool" and returned not in ("bool", "dyn"):
            raise ExpressionProblem(f"the expression gives a {returned}, not a bool")
        self._names = tuple(name for name, _ in kinds)
        self._getters = tuple(getters)
        self._sized = macros
        self._memo: dict[Any, Any] = {}
        self._by_type: dict[type, dict[Any, Any]] = {}
        self._one = getters[0] if len(getters) == 1 else None

    def evaluate(self, ctx: Any, output: Any = None) -> Any:
        """The expression's value for ``ctx`` (and a bound ``$output``).

        Raises:
            MissingInputError: a reference names a value that is not there.
            ExpressionError: the evaluation failed or is over the cost bound.
        """
        one = self._one
        if one is not None:  # one reference, the common case: memo by type, then value
            value = one(ctx, output)
            kind = type(value)
            if kind in _HASHABLE:
                memo = self._by_type.get(kind)
                if memo is not None:
                    found = memo.get(value, _MISSING)
                    if found is not _MISSING:
                        return found
            return self._run((value,))
        return self._run(tuple(get(ctx, output) for get in self._getters))

    def _run(self, values: tuple[Any, ...]) -> Any:
        key: Any = None
        if all(type(v) in _HASHABLE for v in values):
            key = values if self._one is not None else (*values, *map(type, values))
            if self._one is None:
                found = self._memo.get(key, _MISSING)
                if found is not _MISSING:
                    return found
        if self._sized:
            self._check_cost(values)
        data = {name: _plain(v) for name, v in zip(self._names, values, strict=True)}
        try:
            result = self._program.eval(data=data)
        except RuntimeError as error:
            raise self._error(str(error)) from None
        if result.type() == _error_type():
            raise self._error(str(result.value()))
        value = result.plain_value()
        if type(value) not in _SCALARS:
            value = _from_cel(value)
        if key is not None:
            memo = (
                self._memo if self._one is None else self._by_type.setdefault(type(values[0]), {})
            )
            if len(memo) >= _MEMO_SIZE:
                memo.clear()
            memo[key[0] if self._one is not None else key] = value
        return value

    def _check_cost(self, values: Sequence[Any]) -> None:
        size = sum(_size(v, MAX_COST) for v in values)
        steps = (
            sum(size**depth for depth in range(1, self._sized + 1)) if size <= MAX_COST else size
        )
        if steps > MAX_COST:
            raise self._error(
                f"its values hold {size} elements: nested comprehensions over them could "
                f"take more than {MAX_COST} steps"
            )

    def _error(self, message: str) -> ExpressionError:
        cleaned = re.sub(r"^[A-Z_]+: ", "", message.split(" | ", maxsplit=1)[0]).strip()
        if "Iteration budget exceeded" in cleaned:  # CEL's own bound, in our words
            cleaned = f"its comprehensions took more than {MAX_COST} steps"
        return ExpressionError(
            f"stage {self.stage!r}: {self.field}: {self.text!r} could not be evaluated: {cleaned}",
            stage=self.stage,
            field=self.field,
            expression=self.text,
        )

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"


_MISSING: Any = object()


def _size(value: Any, limit: int) -> int:
    """Elements in ``value`` (nested lists and maps, and string lengths / 100, at any
    depth), counted up to ``limit``."""
    if isinstance(value, str | bytes):
        return len(value) // 100
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, list | tuple):
        total = len(value)
        for item in value:
            if total > limit:
                break
            if isinstance(item, list | tuple | Mapping | str | bytes):
                total += _size(item, limit)
        return total
    return 0


_TYPE_NAMES = {"NULL": "null_type", "TIMESTAMP": "google.protobuf.Timestamp",
               "DURATION": "google.protobuf.Duration"}  # fmt: skip


def _from_cel(value: Any) -> Any:
    """A CEL result as plain data: a type (``type(x)``) as its CEL name (``"int"``,
    ``"list"``), inside lists and maps too."""
    if isinstance(value, list):
        return [_from_cel(v) for v in value]
    if isinstance(value, dict):
        return {k: _from_cel(v) for k, v in value.items()}
    if isinstance(value, _cel().Type):
        name = value.name().split("<", 1)[0]
        return _TYPE_NAMES.get(name, name.lower())
    return value


def _problem(message: str, rewritten: str, shifts: list[tuple[int, int, int, int]],
             names: Mapping[str, str]) -> ExpressionProblem:  # fmt: skip
    match = _CEL_ERROR.search(message)
    if match is None:
        return ExpressionProblem(message.strip())
    line, column, what = int(match[1]), int(match[2]), match[3].strip()
    offset = sum(len(x) + 1 for x in rewritten.split("\n")[: line - 1]) + column - 1
    original = offset
    for new_start, new_end, old_start, old_end in shifts:  # back through the references
        if new_start <= offset < new_end:
            original = old_start
        elif offset >= new_end:
            original = old_end + (offset - new_end)
    for ref, variable in names.items():  # speak of the references, not the variables
        what = re.sub(rf"\b{variable}\b", ref, what)
    return ExpressionProblem(what, original)


def is_expression_text(value: str) -> bool:
    """A ``with:`` value computed by CEL: ``${{ ... }}`` somewhere in the string."""
    return "${{" in value


_TEMPLATE = re.compile(r"\$\{\{(.*?)\}\}", re.S)


def template_expression(value: str) -> tuple[str, Callable[[int], int]]:
    """``"${{ e }}"`` -> ``e``; ``"a ${{ e }} b"`` -> ``"a " + string(e) + " b"`` (CEL),
    with a function from an offset in the CEL text to the offset in ``value`` it came from
    (an error in an expression is placed in what the file says)."""
    whole = _TEMPLATE.fullmatch(value.strip())
    if whole is not None:
        inner = whole[1]
        start = value.index("${{") + 3 + len(inner) - len(inner.lstrip())
        return inner.strip(), lambda offset: start + offset
    parts: list[str] = []
    spans: list[tuple[int, int, int]] = []  # an expression's span in the CEL, its start in value
    last = 0
    for match in _TEMPLATE.finditer(value):
        if match.start() > last:
            parts.append(_cel_string(value[last : match.start()]))
        inner = match[1]
        at = sum(len(p) + 3 for p in parts) + len("string(")  # the " + " joins before it
        spans.append(
            (at, at + len(inner.strip()), match.start(1) + len(inner) - len(inner.lstrip()))
        )
        parts.append(f"string({inner.strip()})")
        last = match.end()
    if last < len(value):
        parts.append(_cel_string(value[last:]))

    def place(offset: int) -> int:
        for start, end, original in spans:
            if offset < end + 1:  # in it, or at its closing parenthesis
                return original + max(0, offset - start)
        return len(value)

    return " + ".join(parts), place


def _cel_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def literal(value: Any) -> str:
    """A JSON value as a CEL literal (template parameters in expressions)."""
    import json

    if isinstance(value, float) and not math.isfinite(value):
        raise ExpressionProblem(f"{value!r} has no CEL literal")
    return json.dumps(value)
