"""A research digest pipeline: parallel fetches, a skipped branch, a failing source.

    fetch_news ──┐
    fetch_papers ├─> extract ─> summarize ─┬─> report
    fetch_archive┘ (optional)              │
                                  translate┘ (skips itself: nothing to translate)

Everything is simulated (no network): each fetch sleeps a little and returns
canned documents; the papers service fails once and is retried; with
``archive=down`` in the run's data the archive raises (it is optional: with
``fail_fast=False`` the digest is made without it). The summary "calls a model"
and reports the tokens it spent.

    stageflow run examples/research.py:pipeline --data topic=owls
"""

from __future__ import annotations

import asyncio
from typing import Any

from stageflow import Pipeline, RetryPolicy, StageContext, StageKind, StageOutput

CORPUS = {
    "news": ["Owls hunt at night.", "Barn owls nest in old buildings."],
    "papers": ["Owl feathers reduce turbulence noise.", "Owls swallow prey whole."],
}


async def fetch_news(ctx: StageContext) -> dict[str, Any]:
    await asyncio.sleep(0.4)
    return {"docs": CORPUS["news"], "lang": "en"}


async def fetch_papers(ctx: StageContext) -> dict[str, Any]:
    await asyncio.sleep(0.3)
    if ctx.attempt == 1:  # a transient failure: the retry policy takes care of it
        raise ConnectionError("papers.example.org: 503 Service Unavailable")
    return {"docs": CORPUS["papers"], "lang": "en"}


async def fetch_archive(ctx: StageContext) -> dict[str, Any]:
    await asyncio.sleep(0.6)
    if ctx.data.get("archive") == "down":
        raise ConnectionError("archive.example.org: connection refused")
    return {"docs": ["Owls were a symbol of Athena."], "lang": "en"}


def extract(ctx: StageContext) -> dict[str, Any]:
    """Sync and CPU-bound: runs in a worker thread."""
    docs: list[str] = []
    for source in ("fetch_news", "fetch_papers", "fetch_archive"):
        docs += ctx.inputs.get_from(source, "docs", default=[])
    sentences = [s.strip().rstrip(".") for s in docs]
    return {"sentences": sentences, "sources": len(ctx.inputs)}


class Summarize:
    """A class-based stage, as in stageflow-core."""

    async def execute(self, ctx: StageContext) -> StageOutput:
        await asyncio.sleep(1.5)  # "calling a model"
        sentences = ctx.inputs.get_from("extract", "sentences")
        words = sum(len(s.split()) for s in sentences)
        ctx.usage.report(model="demo-model", input_tokens=40 + 2 * words, output_tokens=words)
        ctx.emit("progress", note=f"summarised {len(sentences)} sentences")
        summary = f"{len(sentences)} findings about {ctx.data['topic']}: " + "; ".join(sentences)
        return StageOutput.ok(summary=summary)


async def translate(ctx: StageContext) -> StageOutput:
    if ctx.data.get("language", "en") == "en":
        return StageOutput.skip("the digest is already in English")
    return StageOutput.ok(summary=f"[{ctx.data['language']}] {ctx.inputs['summarize']['summary']}")


async def report(ctx: StageContext) -> dict[str, Any]:
    await asyncio.sleep(0.2)
    summary = ctx.inputs.get_from("translate", "summary", default=None) or ctx.inputs.get_from(
        "summarize", "summary"
    )
    return {"report": summary}


pipeline = (
    Pipeline("research")
    .with_stage("fetch_news", fetch_news, StageKind.WORK)
    .with_stage(
        "fetch_papers",
        fetch_papers,
        StageKind.WORK,
        timeout=2.0,
        retry=RetryPolicy(attempts=3, backoff="fixed", base=0.2, retry_on=(ConnectionError,)),
    )
    .with_stage("fetch_archive", fetch_archive, StageKind.WORK)
    .with_stage(
        "extract",
        extract,
        StageKind.TRANSFORM,
        dependencies=("fetch_news", "fetch_papers", "fetch_archive"),
        optional=("fetch_archive",),
    )
    .with_stage("summarize", Summarize, StageKind.AGENT, dependencies=("extract",))
    .with_stage("translate", translate, StageKind.TRANSFORM, dependencies=("summarize",))
    .with_stage(
        "report",
        report,
        StageKind.WORK,
        dependencies=("summarize", "translate"),
        optional=("translate",),
    )
)
