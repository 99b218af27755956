"""Headless Chromium for tests that check a web UI as a person would see it (the MLflow UI).

Import from any test (``tests/`` is on ``sys.path``)::

    from browser import browser, wait_for_text, assert_image_loaded, save_screenshot

    with browser() as driver:
        driver.get(url)
        wait_for_text(driver, "run-alpha")
        save_screenshot(driver, "my_page")  # -> <repo>/test-artifacts/my_page.png

or take the ``chrome`` fixture with ``from browser import chrome_fixture  # noqa: F401``.

Chromium and its driver come from Debian (``chromium``, ``chromium-driver``); when missing they are
installed with apt-get, and a failed install fails the test: a UI test that silently skips
proves nothing.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"  # gitignored; CI can upload it
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PACKAGES = ("chromium", "chromium-driver")
INSTALL_TIMEOUT = 900.0  # a cold apt-get of Chromium on a slow mirror takes minutes

_ready = False


def _dpkg_status() -> str:
    """``dpkg-query``'s status words for PACKAGES ('' when dpkg is unavailable)."""
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status} ", *PACKAGES],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout


def _apt(args: list[str], deadline: float) -> None:
    """Run ``apt-get ARGS``, waiting for the dpkg/lists locks another apt-get may hold."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    while True:
        left = max(deadline - time.monotonic(), 1.0)
        command = ["apt-get", "-o", f"DPkg::Lock::Timeout={int(left)}", *args]
        try:
            out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=left)
        except (OSError, subprocess.TimeoutExpired) as e:
            pytest.fail(f"`{' '.join(command)}` failed ({e}); install {' '.join(PACKAGES)} by hand")
        if out.returncode == 0:
            return
        text = (out.stdout + out.stderr).strip()
        # Older apts ignore the lock timeout for some locks: retry until the deadline.
        if "lock" in text.lower() and time.monotonic() < deadline:
            time.sleep(3)
            continue
        tail = " | ".join(text.splitlines()[-5:])
        pytest.fail(
            f"`{' '.join(command)}` exited {out.returncode}: {tail}; "
            f"install {' '.join(PACKAGES)} by hand (Debian) to run the browser tests"
        )


def ensure_chromium(timeout: float = INSTALL_TIMEOUT) -> None:
    """Make sure /usr/bin/chromium and /usr/bin/chromedriver exist, installing them if needed."""
    global _ready
    if _ready:
        return
    deadline = time.monotonic() + timeout
    # Another apt-get may be half-way through installing them (files present, not configured):
    # our apt-get then waits for its lock and finds the work done.
    busy = any(word in _dpkg_status() for word in ("half", "unpacked", "triggers"))
    if busy or not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        if not busy:
            _apt(["update", "-q"], deadline)
        _apt(["install", "-y", "-q", *PACKAGES], deadline)
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} still missing after installing {' '.join(PACKAGES)}")
    _ready = True


@contextmanager
def browser(width: int = 1400, height: int = 1000) -> Iterator:
    """A headless Chromium ``selenium.webdriver.Chrome``, quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    ensure_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--disable-gpu",
        "--disable-extensions",
        f"--window-size={width},{height}",
        "--no-sandbox",  # tests run as root in containers, where the sandbox cannot start
        "--disable-dev-shm-usage",
    ):  # a container's /dev/shm is often 64 MB
        options.add_argument(flag)
    # An explicit driver path keeps Selenium Manager from looking for drivers on the network.
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module", name="chrome")
def chrome_fixture():
    """One browser per test module (Chromium takes a few seconds to start)."""
    with browser() as driver:
        yield driver


def save_screenshot(driver, name: str) -> Path:
    """Save the viewport as ``<repo>/test-artifacts/NAME.png``; returns the path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name.removesuffix('.png')}.png"
    driver.save_screenshot(str(path))
    return path


def _body_text(driver) -> str:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    try:
        return driver.find_element(By.TAG_NAME, "body").text
    except WebDriverException:  # the SPA replaced the DOM under us: try again next poll
        return ""


def wait_for_text(driver, text: str, timeout: float = 30.0) -> None:
    """Wait until ``text`` is visible on the page; on timeout fail with a screenshot and the page."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, timeout, poll_frequency=0.25).until(lambda d: text in _body_text(d))
    except TimeoutException:
        shot = save_screenshot(driver, "failed_wait_for_text")
        page = " ".join(_body_text(driver).split())[:500]
        raise AssertionError(
            f"{text!r} not shown within {timeout:.0f} s at {driver.current_url} "
            f"(screenshot {shot}); the page reads: {page!r}"
        ) from None


# True when the element is a displayed <img> whose picture finished loading and decoded.
_LOADED = "const i = arguments[0]; return i.complete && i.naturalWidth > 0 && i.naturalHeight > 0;"


def assert_image_loaded(driver, css: str = "img", src_contains: str = "", timeout: float = 30.0):
    """Wait for a displayed ``<img>`` matching ``css`` (and whose ``src`` contains
    ``src_contains``) that has really loaded (``naturalWidth > 0``); returns that element."""
    from selenium.common.exceptions import TimeoutException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def loaded(d):
        try:
            for img in d.find_elements(By.CSS_SELECTOR, css):
                src = img.get_attribute("src") or ""
                if src_contains in src and img.is_displayed() and d.execute_script(_LOADED, img):
                    return img
        except WebDriverException:  # stale element while the SPA re-renders
            return False
        return False

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25).until(loaded)
    except TimeoutException:
        shot = save_screenshot(driver, "failed_assert_image_loaded")
        found = driver.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0]))"
            ".map(i => `${i.src.slice(0, 120)} (naturalWidth ${i.naturalWidth})`);",
            css,
        )
        raise AssertionError(
            f"no loaded <img> matching {css!r} with src containing {src_contains!r} within "
            f"{timeout:.0f} s at {driver.current_url} (screenshot {shot}); images: {found}"
        ) from None
