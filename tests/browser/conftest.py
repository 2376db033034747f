"""Fixtures of the browser tests: the built extension, a JupyterLab server, Chromium pages.

Every process is stopped by its fixture even when a test fails: the server (which shuts
down its kernels, whose clusters die with them; anything left under it is killed), the
browser, and playwright's driver. They live for one test module, not the session, so that
the other tests' checks for leftover child processes see none of them.
"""

from __future__ import annotations

import time

import pytest

from . import labkit


def _skip_or_fail(reason: str) -> None:
    if labkit.REQUIRED:
        pytest.fail(f"RAYIPY_BROWSER_TESTS=required, but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def labextension():
    """extension/ built (on first use, or when its sources changed): the build's path."""
    reason = labkit.missing_node()
    if reason:
        _skip_or_fail(reason)
    started = time.monotonic()
    path = labkit.build_extension(labkit.ARTIFACTS / "extension-build.log")
    print(f"extension build checked/done in {time.monotonic() - started:.1f} s")
    return path


@pytest.fixture(scope="module")
def browser():
    reason = labkit.missing_browser()
    if reason:
        _skip_or_fail(reason)
    from playwright.sync_api import sync_playwright
    driver = sync_playwright().start()
    try:
        chromium = driver.chromium.launch(executable_path=str(labkit.CHROMIUM), headless=True,
                                          args=labkit.CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        driver.stop()


@pytest.fixture(scope="module")
def lab(browser, request, tmp_path_factory):
    """A JupyterLab server, with the tree's extension when Node.js can build it (the widget
    tests need no extension); notebooks go in ``lab.notebooks``."""
    extension = None if labkit.missing_node() else request.getfixturevalue("labextension")
    home = tmp_path_factory.mktemp("lab")
    notebooks = home / "notebooks"
    notebooks.mkdir()
    server = labkit.LabServer(home, notebooks, extension)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _kernels_stopped_after_each_test(request):
    """Each test's kernels (with their clusters) stop when it ends: 2 cores are shared."""
    yield
    if "lab" in request.fixturenames:
        request.getfixturevalue("lab").stop_kernels()


@pytest.fixture
def page(browser, request):
    """A fresh browser page; on failure its screenshot goes to test-artifacts/."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(60_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors
    try:
        yield page
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            labkit.ARTIFACTS.mkdir(exist_ok=True)
            try:
                page.screenshot(path=str(labkit.ARTIFACTS / f"FAILED-{request.node.name}.png"))
            except Exception:
                pass
        context.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
