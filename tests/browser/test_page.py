"""The web page at ``/``, in a real headless chromium against a real server."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx

from tests.server.conftest import Server

TIMEOUT = 20_000  # ms a page may take to show what a test waits for


def use_token(page: Any, secret: str) -> None:
    page.fill("#token", secret)
    page.click("#token-form button")


class TestThePageItself:
    def test_the_page_and_its_files_need_no_token_and_hold_no_data(self, web_server: Server):
        with httpx.Client(base_url=web_server.url, timeout=30) as client:
            page = client.get("/")
            script = client.get("/static/page.js")
            style = client.get("/static/page.css")
            assert client.get("/runs").status_code == 401  # the data still needs one
            paths = client.get("/openapi.json").json()["paths"]
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert '<script src="/static/page.js"' in page.text
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]
        assert style.status_code == 200
        assert "/" not in paths  # the page is no API route
        assert not [p for p in paths if p.startswith("/static")]

    def test_without_a_token_the_page_says_one_is_needed(self, page: Any):
        page.wait_for_selector("#notice:not([hidden])", timeout=TIMEOUT)
        assert "enter a token above" in page.text_content("#notice")


class TestRunsList:
    def test_a_run_started_elsewhere_shows_up_in_the_list(self, page: Any, web_server: Server):
        use_token(page, web_server.read_token)
        page.wait_for_selector("#runs-view:not([hidden])")
        run_id = web_server.start("quick", {"n": 3})
        row = page.wait_for_selector(f'tr[data-run="{run_id}"]', timeout=TIMEOUT)
        assert "quick" in row.text_content()
        page.wait_for_selector(f'tr[data-run="{run_id}"] .status.completed', timeout=TIMEOUT)


class TestARunFromThePage:
    def test_start_watch_answer_and_see_it_complete(self, page: Any, web_server: Server):
        urls: list[str] = []
        page.on("request", lambda request: urls.append(request.url))
        use_token(page, web_server.run_token)
        page.click("text=Start a run")
        page.wait_for_selector('#start-pipeline option[value="approval"]', state="attached")
        page.select_option("#start-pipeline", "approval")
        assert page.text_content("#start-description") == "Waits for an approval"
        page.fill("#start-data", json.dumps({"title": "spring sale"}))
        page.fill("#start-labels", json.dumps({"by": "browser-test"}))
        page.click("#start-form button")

        page.wait_for_selector("#run-view:not([hidden])", timeout=TIMEOUT)
        run_id = page.text_content("#run-id")
        assert page.url.endswith(f"#/runs/{run_id}")
        # The first stage turns completed, in the graph (live, from the stream) and the table.
        page.wait_for_selector('#graph g[data-stage="draft"].completed', timeout=TIMEOUT)
        page.wait_for_selector('#stages tr[data-stage="draft"] .status.completed')
        form = page.wait_for_selector('form[data-input="approve"]', timeout=TIMEOUT)
        assert "Publish 'post spring sale'?" in form.text_content()
        page.wait_for_selector('#graph g[data-stage="approve"].waiting', timeout=TIMEOUT)
        page.wait_for_selector('#events li[data-type="run.waiting"]', timeout=TIMEOUT)
        shot = os.environ.get("STAGEFLOW_SCREENSHOT")
        if shot:  # the picture in docs/service.md: STAGEFLOW_SCREENSHOT=docs/images/...
            page.screenshot(path=str(Path(shot)), full_page=True)

        # A value its schema refuses is said so, and the run goes on waiting.
        page.fill('form[data-input="approve"] textarea', json.dumps({"approved": "maybe"}))
        page.click('form[data-input="approve"] button')
        page.wait_for_selector("#notice:not([hidden])", timeout=TIMEOUT)
        assert "approve" in page.text_content("#notice")
        assert web_server.status(run_id) == "waiting"

        page.fill('form[data-input="approve"] textarea', json.dumps({"approved": True}))
        page.click('form[data-input="approve"] button')
        page.wait_for_selector("#run-status.completed", timeout=TIMEOUT)
        page.wait_for_selector('#graph g[data-stage="publish"].completed', timeout=TIMEOUT)
        page.wait_for_selector('#events li[data-type="run.completed"]', timeout=TIMEOUT)
        assert page.query_selector('form[data-input="approve"]') is None

        with web_server.client() as client:
            run = client.get(f"/runs/{run_id}").json()
            outputs = client.get(f"/runs/{run_id}/outputs").json()["outputs"]
        assert run["status"] == "completed"
        assert run["labels"] == {"by": "browser-test"}
        assert outputs["publish"] == {"published": True}
        # Each event once, in order, across the stream's end at run.waiting and its
        # follow-on after the input.
        shown = page.eval_on_selector_all(
            "#events li", "items => items.map(i => [Number(i.dataset.seq), i.dataset.type])"
        )
        seqs = [seq for seq, _ in shown]
        assert seqs == sorted(set(seqs))
        assert shown[0][1] == "run.started"
        assert shown[-1][1] == "run.completed"
        assert all(web_server.run_token not in url for url in urls)  # never in a URL
