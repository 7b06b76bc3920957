"""A faithful JSON codec for stage outputs and run data.

A value read back equals the value written, type included: a tuple stays a
tuple, a datetime a datetime, a pydantic model that model. Plain JSON values are
written as they are; anything else becomes a small tagged object
``{"__sf__": tag, "v": ...}``. A value that cannot be written faithfully (an
object of an unknown class, a dict with non-str keys, a dict subclass) is
refused with an error naming where it is and its type, so that a run fails the
same way whether or not it was ever resumed.

Classes (enums, dataclasses, pydantic models) are recorded by import path and
imported again when read: a store must only hold data its readers trust.
"""

from __future__ import annotations

import base64
import collections.abc
import dataclasses
import datetime as dt
import decimal
import enum
import importlib
import json
import math
import types
import typing
import uuid
from collections.abc import Callable
from typing import Any, Final

from ._redact import MASK, SECRETS, is_secret_value
from .errors import CodecError

__all__ = [
    "CodecError",
    "check_type",
    "decode",
    "dumps",
    "encode",
    "field_types",
    "is_model_class",
    "loads",
]

TAG: Final = "__sf__"
_NATIVE: Final = (str, int, float, bool, type(None))


def _path_of(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _import(path: str) -> Any:
    module, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _is_model(value: object) -> bool:
    # pydantic is imported only if the value could be a model: it costs ~50 ms to import.
    base = type(value).__mro__
    return any(c.__module__ == "pydantic.main" and c.__name__ == "BaseModel" for c in base)


def encode(value: Any, where: str = "value") -> Any:
    """``value`` as plain JSON data, with tags where JSON alone would lose the type.

    Raises:
        CodecError: naming ``where`` inside ``value`` and the offending type.
    """
    kind = type(value)
    if kind is str or kind is bool or kind is int or value is None:
        return value
    if kind is float:
        return value if math.isfinite(value) else {TAG: "float", "v": repr(value)}
    if kind is dict:
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                raise CodecError(
                    f"{where} has a key {key!r} of type {type(key).__qualname__}: only str "
                    "keys can be stored",
                    field=where,
                    value=key,
                )
            out[key] = encode(item, f"{where}[{key!r}]")
        return {TAG: "dict", "v": out} if TAG in out else out
    if kind is list:
        return [encode(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if kind is tuple:
        return {TAG: "tuple", "v": [encode(item, f"{where}[{i}]") for i, item in enumerate(value)]}
    encoder = _ENCODERS.get(kind)
    if encoder is not None:
        return encoder(value, where)
    if isinstance(value, enum.Enum):
        return {TAG: "enum", "c": _path_of(kind), "v": encode(value.value, f"{where}.value")}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {
            f.name: encode(getattr(value, f.name), f"{where}.{f.name}")
            for f in dataclasses.fields(value)
        }
        return {TAG: "dataclass", "c": _path_of(kind), "v": fields}
    if _is_model(value):
        return {TAG: "model", "c": _path_of(kind), "v": value.model_dump(mode="json")}
    if is_secret_value(value):
        raise _secret_refused(where)
    raise CodecError(
        f"{where} is a {_path_of(kind)}, which cannot be stored faithfully; use JSON "
        "types, tuples, sets, bytes, datetimes, Decimal, UUID, enums, dataclasses or "
        "pydantic models",
        field=where,
        value=value,
    )


def _sequence(tag: str) -> Callable[[Any, str], Any]:
    def encoder(value: Any, where: str) -> Any:
        items = sorted(value, key=repr) if tag in ("set", "frozenset") else value
        return {TAG: tag, "v": [encode(item, f"{where}[{i}]") for i, item in enumerate(items)]}

    return encoder


def _timedelta(value: dt.timedelta, where: str) -> Any:
    return {TAG: "timedelta", "v": [value.days, value.seconds, value.microseconds]}


_ENCODERS: dict[type, Callable[[Any, str], Any]] = {
    set: _sequence("set"),
    frozenset: _sequence("frozenset"),
    bytes: lambda v, w: {TAG: "bytes", "v": base64.b64encode(v).decode("ascii")},
    dt.datetime: lambda v, w: {TAG: "datetime", "v": v.isoformat()},
    dt.date: lambda v, w: {TAG: "date", "v": v.isoformat()},
    dt.time: lambda v, w: {TAG: "time", "v": v.isoformat()},
    dt.timedelta: _timedelta,
    decimal.Decimal: lambda v, w: {TAG: "decimal", "v": str(v)},
    uuid.UUID: lambda v, w: {TAG: "uuid", "v": str(v)},
}


def decode(data: Any) -> Any:
    """The value that :func:`encode` turned into ``data``."""
    kind = type(data)
    if kind is list:
        return [decode(item) for item in data]
    if kind is not dict:
        return data
    tag = data.get(TAG)
    if tag is None:
        return {key: decode(item) for key, item in data.items()}
    raw = data["v"]
    decoder = _DECODERS.get(tag)
    if decoder is None:
        raise CodecError(f"unknown stored type tag {tag!r}", field="tag", value=tag)
    return decoder(raw, data)


_DECODERS: dict[str, Callable[[Any, dict[str, Any]], Any]] = {
    "dict": lambda v, d: {key: decode(item) for key, item in v.items()},
    "tuple": lambda v, d: tuple(decode(item) for item in v),
    "set": lambda v, d: {decode(item) for item in v},
    "frozenset": lambda v, d: frozenset(decode(item) for item in v),
    "float": lambda v, d: float(v),
    "bytes": lambda v, d: base64.b64decode(v),
    "datetime": lambda v, d: dt.datetime.fromisoformat(v),
    "date": lambda v, d: dt.date.fromisoformat(v),
    "time": lambda v, d: dt.time.fromisoformat(v),
    "timedelta": lambda v, d: dt.timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
    "decimal": lambda v, d: decimal.Decimal(v),
    "uuid": lambda v, d: uuid.UUID(v),
    "enum": lambda v, d: _import(d["c"])(decode(v)),
    "dataclass": lambda v, d: _import(d["c"])(**{k: decode(i) for k, i in v.items()}),
    "model": lambda v, d: _import(d["c"]).model_validate(v),
}


def dumps(value: Any, where: str = "value", *, stage: str | None = None) -> str:
    """``encode`` then compact JSON text.

    Raises:
        CodecError: naming ``where`` inside ``value``, the offending type and
            ``stage``, the stage whose output or state ``value`` is (if any).
    """
    try:
        data = encode(value, where)
        text = _compact(data)
        if SECRETS.active and SECRETS.found(text):  # a secret's text, put there by hand
            raise _secret_refused(_where_secret(data, where))
    except CodecError as error:
        if stage is not None and error.stage is None:
            error.stage = stage
        raise
    return text


def _secret_refused(where: str) -> CodecError:
    return CodecError(
        f"{where} is a secret (or holds one): stageflow never stores a secret's value; "
        "keep the SecretRef and resolve it where it is used (ctx.secret(ref))",
        field=where,
        value=MASK,
    )


def _where_secret(data: Any, where: str) -> str:
    """Where in ``data`` (encoded) the first str holding a known secret is."""
    if isinstance(data, str):
        return where
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(
        data, list) else ()  # fmt: skip
    for key, item in items:
        if SECRETS.found(_compact(item)):
            inner = item if not (isinstance(item, dict) and TAG in item) else item.get("v")
            return _where_secret(inner, f"{where}[{key!r}]")
    return where


# json.dumps with options makes an encoder per call, which costs about as much as encoding
# a small output (a map's items store one each): the encoder is made once.
_compact: Final[Callable[[Any], str]] = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False
).encode


def loads(text: str | bytes) -> Any:
    """The value :func:`dumps` wrote."""
    return decode(json.loads(text))


# --------------------------------------------------------------------------- declared types

_CONTAINERS: Final = frozenset({list, tuple, set, frozenset})
_ABSTRACT: Final = frozenset(
    {
        typing.Union,
        types.UnionType,
        collections.abc.Sequence,
        collections.abc.Collection,
        collections.abc.Iterable,
        collections.abc.Set,
    }
)
_MAPPINGS: Final = frozenset({dict, collections.abc.Mapping})


def is_model_class(cls: type) -> bool:
    """True for a pydantic model class (pydantic itself is not imported)."""
    return any(c.__module__ == "pydantic.main" and c.__name__ == "BaseModel" for c in cls.__mro__)


def _unstorable(where: str, tp: object, why: str, stage: str | None) -> CodecError:
    if isinstance(tp, type) and typing.get_origin(tp) is None:
        module = tp.__module__
        name = tp.__qualname__ if module == "builtins" else f"{module}.{tp.__qualname__}"
    else:
        name = repr(tp)
    return CodecError(f"{where} is declared as {name}, {why}", field=where, value=tp, stage=stage)


def check_type(
    tp: object, where: str, *, stage: str | None = None, _seen: frozenset[type] = frozenset()
) -> None:
    """Check that values of the declared type ``tp`` can be stored faithfully.

    What :func:`encode` would refuse whatever the value: a class it does not know, a
    dict with non-str keys, or an enum, dataclass or pydantic model that cannot be
    imported back by its recorded path (``module:qualname``, e.g. a class defined in
    a function). ``Any``, ``object``, type variables and unresolved forward
    references are left to the values themselves.

    Raises:
        CodecError: naming ``where`` (with the field inside ``tp`` that is at fault),
            the declared type and ``stage``.
    """
    if tp is None or tp is type(None) or tp is Any or tp is object:
        return
    origin = typing.get_origin(tp)
    if origin is not None:
        args = typing.get_args(tp)
        if origin is typing.Annotated:
            check_type(args[0], where, stage=stage, _seen=_seen)
        elif origin is typing.Literal:
            for value in args:
                if type(value) not in _NATIVE and not isinstance(value, enum.Enum):
                    raise _unstorable(where, tp, "a literal that cannot be stored", stage)
        elif origin in _MAPPINGS:
            if args:
                key, item = args
                if key is not str and key is not Any:
                    raise _unstorable(where, tp, "but only str keys can be stored", stage)
                check_type(item, f"{where}[...]", stage=stage, _seen=_seen)
        elif origin in _CONTAINERS or origin in _ABSTRACT:
            for i, arg in enumerate(args):
                if arg is not Ellipsis:
                    inner = where if origin in (typing.Union, types.UnionType) else f"{where}[{i}]"
                    check_type(arg, inner, stage=stage, _seen=_seen)
        else:
            check_type(origin, where, stage=stage, _seen=_seen)
        return
    if not isinstance(tp, type):
        return  # a forward reference as a string, a NewType, a TypeVar: the value will tell
    if tp in _NATIVE or tp in _ENCODERS or tp in _CONTAINERS or tp is dict or tp in _seen:
        return
    is_dataclass = dataclasses.is_dataclass(tp)
    if not (issubclass(tp, enum.Enum) or is_dataclass or is_model_class(tp)):
        raise _unstorable(
            where,
            tp,
            "which cannot be stored faithfully; use JSON types, tuples, sets, bytes, "
            "datetimes, Decimal, UUID, enums, dataclasses or pydantic models",
            stage,
        )
    try:
        found = _import(_path_of(tp))
    except (ImportError, AttributeError):
        found = None
    if found is not tp:
        raise _unstorable(
            where,
            tp,
            f"which cannot be imported back by its path {_path_of(tp)!r} (a class "
            "defined in a function?); define it at module level",
            stage,
        )
    if is_dataclass:  # its fields are stored one by one
        hints = field_types(tp)
        for f in dataclasses.fields(tp):
            check_type(hints.get(f.name, Any), f"{where}.{f.name}", stage=stage, _seen=_seen | {tp})


def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotations of a dataclass or model class (those that resolve)."""
    try:
        return typing.get_type_hints(cls, include_extras=True)
    except Exception:  # noqa: BLE001 - an unresolvable forward reference: keep the raw ones
        return dict(getattr(cls, "__annotations__", {}))
