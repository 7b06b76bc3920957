"""Tokens: made, written as hashed lines, read from a file and the environment."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from stageflow.adapters.http import TOKENS_ENV, Token, load_tokens, new_token, parse_tokens
from stageflow.adapters.http._auth import authenticate
from stageflow.errors import ConfigurationError


class TestNewToken:
    def test_a_new_token_is_kept_only_as_its_hash(self):
        secret, token = new_token("ci", ["run"])
        assert secret.startswith("sft_")
        assert len(secret) > 40
        assert token.digest == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in token.line
        assert token.line == f"ci run sha256:{token.digest}"
        assert parse_tokens(token.line) == (token,)

    def test_two_tokens_differ(self):
        assert new_token("a")[0] != new_token("a")[0]

    def test_run_implies_read_and_read_nothing_more(self):
        _, runner = new_token("ci", ["run"])
        _, reader = new_token("dash")
        assert runner.allows("run")
        assert runner.allows("read")
        assert reader.allows("read")
        assert not reader.allows("run")

    @pytest.mark.parametrize(
        ("name", "scopes", "field"),
        [
            ("", ["read"], "name"),
            ("has space", ["read"], "name"),
            ("x" * 65, ["read"], "name"),
            ("ci", ["admin"], "scopes"),
            ("ci", [], "scopes"),
        ],
    )
    def test_bad_names_and_scopes_are_refused(self, name, scopes, field):
        with pytest.raises(ConfigurationError) as caught:
            new_token(name, scopes)
        assert caught.value.field == field


class TestParsing:
    def test_lines_comments_and_blank_lines(self):
        _, a = new_token("alice@ops", ["read", "run"])
        _, b = new_token("ci", ["read"])
        text = f"# the tokens\n\n{a.line}  # alice\n   {b.line}\n"
        assert parse_tokens(text) == (a, b)
        assert a.scopes == frozenset({"read", "run"})

    @pytest.mark.parametrize(
        "line",
        [
            "ci read",
            "ci read sha256:abc",
            "ci admin sha256:" + "a" * 64,
            "ci read md5:" + "a" * 32,
            "ci read " + "a" * 64,
            "c i read sha256:" + "a" * 64,
            "sft_pasted-the-secret-by-mistake",
        ],
    )
    def test_a_bad_line_is_refused_by_number_never_by_its_text(self, line):
        with pytest.raises(ConfigurationError) as caught:
            parse_tokens(f"# first\n{line}\n", source="tokens.txt")
        assert "tokens.txt, line 2" in str(caught.value)
        assert line not in str(caught.value)
        assert caught.value.value == "tokens.txt, line 2"

    def test_a_name_twice_is_refused(self):
        _, a = new_token("ci")
        _, b = new_token("ci", ["run"])
        with pytest.raises(ConfigurationError, match="twice"):
            parse_tokens(f"{a.line}\n{b.line}")


class TestLoading:
    def test_the_file_and_the_environment_both_count(self, tmp_path: Path):
        _, a = new_token("a")
        _, b = new_token("b", ["run"])
        _, c = new_token("c")
        path = tmp_path / "tokens"
        path.write_text(a.line + "\n")
        assert load_tokens(path, env={TOKENS_ENV: f"{b.line};{c.line}"}) == (a, b, c)
        assert load_tokens(env={}) == ()

    def test_an_unreadable_file_is_refused_naming_it(self, tmp_path: Path):
        with pytest.raises(ConfigurationError) as caught:
            load_tokens(tmp_path / "missing", env={})
        assert caught.value.field == "tokens_file"

    def test_a_name_in_both_is_refused(self, tmp_path: Path):
        _, a = new_token("a")
        path = tmp_path / "tokens"
        path.write_text(a.line)
        with pytest.raises(ConfigurationError, match="both"):
            load_tokens(path, env={TOKENS_ENV: a.line})


class TestAuthenticate:
    def test_the_token_presented_is_found(self):
        secret, token = new_token("a")
        _, other = new_token("b")
        tokens = (other, token)
        assert authenticate(tokens, f"Bearer {secret}") == token
        assert authenticate(tokens, f"bearer   {secret}  ") == token
        assert authenticate(tokens, None) is None

    @pytest.mark.parametrize("header", ["Bearer nope", "Basic abc", "Bearer", "", "token"])
    def test_anything_else_is_refused_with_a_reason(self, header):
        _, token = new_token("a")
        assert isinstance(authenticate((token,), header), str)

    def test_no_token_configured_lets_nobody_in(self):
        secret, _ = new_token("a")
        assert authenticate((), f"Bearer {secret}") == "invalid token"

    def test_a_token_is_a_frozen_value(self):
        _, token = new_token("a")
        with pytest.raises(AttributeError):
            token.name = "b"  # type: ignore[misc]
        assert isinstance(token, Token)
