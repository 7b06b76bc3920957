"""The handlers review.yaml names: extract claims, verify them, report, publish.

They stand in for model calls and a CMS with plain, deterministic code: the same
document always gives the same claims, scores and URL, and nothing goes to the network.
"""

from __future__ import annotations

import re

from pydantic import BaseModel

HEDGES = ("allegedly", "reportedly", "probably", "maybe", "rumoured", "some say")
"""Words that make a claim weak: an unverifiable claim hedges."""


class Claim(BaseModel):
    """One checkable statement of the document."""

    id: str
    text: str


class Claims(BaseModel):
    """What ``extract`` gives: ``$extract.claims`` is checked against it when the file loads."""

    claims: list[Claim]
    words: int


class Report(BaseModel):
    """What ``report`` gives: the route reads ``$report.score``, typed as a number."""

    title: str
    score: float
    supported: int
    total: int
    summary: str


def extract_claims(document: str) -> dict[str, object]:
    """Each sentence with a number, a citation or a hedge is a claim (an LLM would pick them).

    It returns plain data, which ``Claims`` checks: the claims are what ``verify`` maps over.
    """
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", document) if s.strip()]
    checkable = [
        s for s in sentences if re.search(r"\d|\[\d+\]", s) or any(h in s.lower() for h in HEDGES)
    ]
    return {
        "claims": [{"id": f"c{i}", "text": text} for i, text in enumerate(checkable, start=1)],
        "words": len(document.split()),
    }


async def verify_claim(claim: dict[str, str]) -> dict[str, object]:
    """Score one claim from 0 to 1: cited claims hold, hedged ones do not (a fake judge)."""
    text = claim["text"]
    cited = bool(re.search(r"\[\d+\]", text))
    hedged = any(h in text.lower() for h in HEDGES)
    score = 0.95 if cited and not hedged else 0.2 if hedged else 0.6
    return {"id": claim["id"], "score": score, "supported": score >= 0.5, "cited": cited}


def report(title: str, verdicts: list[dict[str, object]]) -> Report:
    """The mean score of the claims (a document with no claim to check scores 1)."""
    scores = [float(str(v["score"])) for v in verdicts]
    supported = sum(1 for v in verdicts if v["supported"])
    score = round(sum(scores) / len(scores), 2) if scores else 1.0
    return Report(
        title=title,
        score=score,
        supported=supported,
        total=len(verdicts),
        summary=f"{title}: {supported} of {len(verdicts)} claims supported (score {score})",
    )


async def publish(title: str, summary: str, reviewer: str = "", note: str = "") -> dict[str, str]:
    """Publish to the (fake) CMS: the URL is the title's slug."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return {
        "url": f"https://news.example/{slug}",
        "summary": summary,
        "reviewer": reviewer or "auto",
        "note": note,
    }


def review_brief(
    report: dict[str, object], verdicts: list[dict[str, object]], claims: list[dict[str, str]]
) -> dict[str, object]:
    """What the reviewer reads: the report, and the claims that did not hold."""
    texts = {c["id"]: c["text"] for c in claims}
    doubtful = [texts[str(v["id"])] for v in verdicts if not v["supported"]]
    return {
        "title": report["title"],
        "summary": report["summary"],
        "doubtful": doubtful,
        "doubts": " ".join(f"({i}) {text}" for i, text in enumerate(doubtful, start=1)),
    }
