"""The healthy run's HTML report in a real headless Chromium: it says the run was
healthy in a sentence (no empty failure table), explains the monitor's missing half,
and logs no console error."""

import gzip
import shutil
from pathlib import Path

import pytest

from virt_debug.trace import analyze_paths
from virt_debug.trace.report import HEALTHY, render

LAUNCH = (
    Path(__file__).parent
    / "data/traces/launches/demo-20261203-194750/20261203-194759-20500"
)
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not shutil.which(CHROMIUM), reason="needs Debian's chromium"),
]


def test_healthy_report_reads_as_healthy(tmp_path):
    launch = tmp_path / "launch"
    shutil.copytree(LAUNCH, launch)
    packed = launch / "strace.log.gz"
    (launch / "strace.log").write_bytes(gzip.decompress(packed.read_bytes()))
    packed.unlink()
    page_file = tmp_path / "report.html"
    page_file.write_text(render(analyze_paths([launch]), "html"))

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        problems: list[str] = []
        page.on(
            "console", lambda m: problems.append(m.text) if m.type == "error" else None
        )
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(page_file.as_uri())
        page.wait_for_selector("#timeline[data-rendered]")
        healthy = page.locator("#healthy").inner_text()
        failures = page.locator("#failures").inner_text()
        gap = page.locator("#monitor-gap").inner_text()
        headings = page.locator("h2").all_inner_texts()
        browser.close()

    assert HEALTHY in healthy
    assert failures == "No failed call that matters."
    assert "recvmsg/read were not traced" in gap
    assert not any(h.startswith("Likely cause") for h in headings), headings
    assert problems == []
