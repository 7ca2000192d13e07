"""`mailbridge report` on a synced and pushed world: one HTML file that opens offline in
headless Chromium with no console error, every chart drawn. The screenshot is kept in
test-artifacts/ for a person to look at."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.pushback import push
from tests.conftest import REPO_ROOT
from tests.dbt.test_campaign_marts import campaign_world
from tests.dbt.test_dbt_build import dbt_build

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "test-artifacts"


def chromium() -> str:
    """Debian's Chromium; CI installs it (.ci/run) and sets MAILBRIDGE_REQUIRE_BROWSER, so there
    the test cannot skip."""
    if not CHROMIUM.is_file():
        if os.environ.get("MAILBRIDGE_REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    return str(CHROMIUM)


@pytest.mark.slow
def test_the_report_opens_offline_and_draws_every_chart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from playwright.sync_api import sync_playwright

    with campaign_world(tmp_path, monkeypatch, "report") as (config_file, config, _emulator, _scenario):
        dbt_build(tmp_path, config.warehouse_path(), "report")
        push(config, run_id="report-push")
    out = tmp_path / "out" / "report.html"
    made = subprocess.run(
        [sys.executable, "-m", "mailbridge.cli", "report", "--out", str(out), "-c", str(config_file)],
        cwd=REPO_ROOT,
        env={**os.environ, "MAILBRIDGE_WAREHOUSE": str(config.warehouse_path())},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    problems: list[str] = []
    elsewhere: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            # offline: a request for anything beyond the file itself is refused, and fails the test
            page.on(
                "request", lambda request: None if request.url.startswith("file:") else elsewhere.append(request.url)
            )
            page.route(
                "**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort()
            )
            page.goto(out.as_uri())
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 5")
            charts = page.locator(".js-plotly-plot").count()
            drawn = page.locator(".js-plotly-plot g.trace").count()
            headings = page.locator("h2").all_inner_texts()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()
    shutil.copy2(out, ARTIFACTS / "report.html")
    assert problems == []
    assert elsewhere == []
    assert headings == ["Campaigns", "List growth", "Reconciliation", "Push outcomes", "Consent coverage"]
    assert charts == 5 and drawn >= 5
