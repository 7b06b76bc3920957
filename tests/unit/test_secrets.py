"""Secrets: a SecretRef resolves only at call time to a masked value; its text is never
stored (the codec refuses it, naming the stage and the field) and is masked wherever text
leaves the process through stageflow — stored failure reasons, events, log records, spans.

The known secrets are the process's: each test uses a value of its own and forgets them
all afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from stageflow import (
    CodecError,
    ConfigurationError,
    Engine,
    JsonFormatter,
    LoggingInterceptor,
    Pipeline,
    SecretRef,
    StageStatus,
    TracingInterceptor,
    known_secret,
)
from stageflow._codec import dumps
from stageflow._redact import MASK, SECRETS, redacted
from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.testing import RecordingSink, run_virtual

from ._otel import Traces

SECRET = "sk-live-7f3a9QpZ2mW8"


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    SECRETS.forget()
    yield
    SECRETS.forget()


@pytest.fixture
def env_secret(monkeypatch: pytest.MonkeyPatch) -> SecretRef:
    monkeypatch.setenv("STAGEFLOW_TEST_KEY", SECRET)
    return SecretRef.env("STAGEFLOW_TEST_KEY")


# ---------------------------------------------------------------------------- resolving


def test_an_env_reference_resolves_to_a_masked_value(env_secret: SecretRef) -> None:
    value = asyncio.run(env_secret.resolve())
    assert isinstance(value, SecretStr)
    assert value.get_secret_value() == SECRET
    assert SECRET not in f"{value} {value!r} {value!s}"
    assert SECRETS.found(f"the key is {SECRET}")


def test_a_file_reference_reads_the_file_without_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(SECRET + "\n")
    assert asyncio.run(SecretRef.file(path).resolve()).get_secret_value() == SECRET


def test_a_reference_of_a_resolver_of_the_engine(env_secret: SecretRef) -> None:
    class Vault:
        async def resolve(self, name: str) -> str:
            return f"vault-{name}-value"

    async def uses(ctx: Any) -> dict[str, Any]:
        value = await ctx.secret(SecretRef("vault", "db"))
        return {"length": len(value.get_secret_value())}

    graph = Pipeline("p").with_stage("uses", uses).build()
    result = run_virtual(Engine(secrets={"vault": Vault()}).run(graph))
    assert result["uses"].data == {"length": len("vault-db-value")}


def stored(tmp_path: Path) -> bytes:
    """The bytes of the SQLite database and its write-ahead log."""
    return b"".join(path.read_bytes() for path in sorted(tmp_path.glob("runs.db*")))


def test_a_reference_is_stored_as_itself_never_its_value(
    tmp_path: Path, env_secret: SecretRef
) -> None:
    async def uses(ctx: Any) -> dict[str, Any]:
        value = await ctx.secret(ctx.data["key"])
        return {"ok": bool(value.get_secret_value())}

    store = SQLAlchemyStore(f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}")
    graph = Pipeline("p").with_stage("uses", uses).build()
    result = asyncio.run(Engine(store=store).run(graph, {"key": env_secret}))
    assert result["uses"].data == {"ok": True}
    assert b"STAGEFLOW_TEST_KEY" in stored(tmp_path)
    assert SECRET.encode() not in stored(tmp_path)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: SecretRef("Env", "x"), "scheme"),
        (lambda: SecretRef("env", " "), "name"),
        (lambda: SecretRef.env(3), "name"),  # type: ignore[arg-type]
    ],
    ids=["scheme", "blank-name", "name-type"],
)
def test_a_bad_reference_is_refused_naming_the_field(make: Any, field: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        make()
    assert caught.value.field == field


def test_what_cannot_be_resolved_says_which_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STAGEFLOW_NO_SUCH", raising=False)
    for ref, words in [
        (SecretRef.env("STAGEFLOW_NO_SUCH"), "'STAGEFLOW_NO_SUCH' is not set"),
        (SecretRef.file(tmp_path / "none"), "the file cannot be read"),
        (SecretRef("vault", "db"), "no resolver for the scheme 'vault'"),
    ]:
        with pytest.raises(ConfigurationError, match=words):
            asyncio.run(ref.resolve())


def test_ctx_secret_refuses_what_is_no_reference_without_showing_it() -> None:
    async def wrong(ctx: Any) -> None:
        await ctx.secret(SECRET)

    result = run_virtual(Engine().run(Pipeline("p").with_stage("s", wrong).build()))
    error = result["s"].error
    assert isinstance(error, ConfigurationError)
    assert "takes a SecretRef" in str(error)
    assert SECRET not in str(error)
    assert error.value == "str"


def test_a_resolver_giving_no_text_is_an_error() -> None:
    class Broken:
        async def resolve(self, name: str) -> Any:
            return 42

    with pytest.raises(ConfigurationError, match="gave int"):
        asyncio.run(SecretRef("vault", "x").resolve({"vault": Broken()}))


@pytest.mark.parametrize(
    ("secrets", "field"),
    [
        (["vault"], "secrets"),
        ({"env": object()}, "secrets"),
        ({"vault": object()}, "secrets.vault"),
    ],
    ids=["not-a-mapping", "built-in-scheme", "no-resolve"],
)
def test_an_engine_refuses_bad_secret_resolvers(secrets: Any, field: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Engine(secrets=secrets)
    assert caught.value.field == field


# ---------------------------------------------------------------------------- masking


def test_a_known_secret_is_masked_as_it_is_and_as_json_or_base64_would_write_it() -> None:
    secret = 'p@ss"w\\ord-é-42'
    known_secret(secret)
    raw = secret.encode()
    texts = [
        f"token={secret};",
        json.dumps({"k": f"x{secret}y"}),
        json.dumps({"k": secret}, ensure_ascii=True),
    ]
    for prefix in (b"", b"a", b"ab"):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            texts.append("Basic " + encode(prefix + raw + b"tail").decode())
    for text in texts:
        assert SECRETS.found(text), text
        assert MASK in redacted(text)
        assert not SECRETS.found(redacted(text)), text


def test_known_secret_refuses_what_is_no_text_without_showing_it() -> None:
    with pytest.raises(ConfigurationError, match="not bytes") as caught:
        known_secret(b"sk-bytes-secret")  # type: ignore[arg-type]
    assert caught.value.field == "value"
    assert caught.value.value == "bytes"
    assert not SECRETS.active


def test_nothing_is_masked_while_no_secret_is_known_nor_a_short_one() -> None:
    assert not SECRETS.active
    assert redacted("abc sk-live") == "abc sk-live"
    known_secret("abc")  # too short to mask: it would mask it everywhere
    assert not SECRETS.active


# ---------------------------------------------------------------------------- never stored


def test_the_codec_refuses_a_secret_value_naming_the_stage_and_the_field() -> None:
    with pytest.raises(CodecError) as caught:
        dumps({"key": SecretStr(SECRET)}, "the output of stage 's'", stage="s")
    assert caught.value.field == "the output of stage 's'['key']"
    assert caught.value.stage == "s"
    assert "never stores a secret" in str(caught.value)
    assert caught.value.value == MASK


def test_the_codec_refuses_a_known_secret_s_text_wherever_it_is_in_the_value() -> None:
    known_secret(SECRET)
    with pytest.raises(CodecError) as caught:
        dumps({"a": [1, {"b": ("x", f"Bearer {SECRET}")}]}, "the output of stage 's'", stage="s")
    assert caught.value.field == "the output of stage 's'['a'][1]['b'][1]"
    assert SECRET not in str(caught.value)
    assert dumps({"a": "no secret here"}) == '{"a":"no secret here"}'


async def puts_it_in_its_output(ctx: Any) -> dict[str, Any]:
    value = await ctx.secret(ctx.data["key"])
    return {"header": f"Bearer {value.get_secret_value()}"}


async def saves_it(ctx: Any) -> dict[str, Any]:
    value = await ctx.secret(ctx.data["key"])
    await ctx.state.save({"token": value.get_secret_value()})
    return {}


async def fails_with_it(ctx: Any) -> dict[str, Any]:
    value = await ctx.secret(ctx.data["key"])
    logging.getLogger("stageflow.test.secrets").warning("using %s", value.get_secret_value())
    ctx.emit("progress", note=f"called with {value.get_secret_value()}")
    raise RuntimeError(f"auth failed with key {value.get_secret_value()}")


def test_a_run_that_leaks_its_secret_everywhere_leaks_it_nowhere(
    tmp_path: Path, env_secret: SecretRef, caplog: pytest.LogCaptureFixture
) -> None:
    traces, sink = Traces(), RecordingSink()
    stream = tmp_path / "log.jsonl"
    handler = logging.FileHandler(stream)
    handler.setFormatter(JsonFormatter())
    logging.getLogger("stageflow").addHandler(handler)
    store = SQLAlchemyStore(f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}")
    engine = Engine(store=store, sink=sink, fail_fast=False, interceptors=[
        TracingInterceptor(tracer_provider=traces.provider),
        LoggingInterceptor("stageflow.stages", level=logging.INFO),
    ])  # fmt: skip
    graph = (
        Pipeline("leaky")
        .with_stage("output", puts_it_in_its_output)
        .with_stage("state", saves_it)
        .with_stage("fails", fails_with_it)
        .build()
    )
    try:
        with caplog.at_level(logging.DEBUG):
            result = asyncio.run(engine.run(graph, {"key": env_secret}))
    finally:
        logging.getLogger("stageflow").removeHandler(handler)
        handler.close()
    # Every refused write failed its stage with a clear error.
    for name, where in (("output", "the output of stage 'output'['header']"),
                        ("state", "the state of stage 'state'['token']")):  # fmt: skip
        error = result[name].error
        assert isinstance(error, CodecError), (name, error)
        assert error.field == where
        assert error.stage == name
    assert result["fails"].status is StageStatus.FAILED
    # The secret is nowhere: the store's bytes, the events, the log records, the spans.
    secret = SECRET.encode()
    assert secret not in stored(tmp_path)
    assert base64.b64encode(secret) not in stored(tmp_path)
    assert SECRET not in repr([(e.type, dict(e.data)) for e in sink.events])
    assert SECRET not in stream.read_text()
    ours = [r for r in caplog.records if r.name == "stageflow.stages"]
    assert ours
    assert all(SECRET not in r.getMessage() and SECRET not in repr(r.__dict__) for r in ours)
    for span in traces.spans:
        seen = [span.status.description or "", repr(dict(span.attributes or {}))]
        seen += [repr(dict(event.attributes or {})) for event in span.events]
        assert all(SECRET not in text for text in seen), span.name
    assert MASK in (result["fails"].reason or "")
    assert '"message": "using ***"' in stream.read_text()
