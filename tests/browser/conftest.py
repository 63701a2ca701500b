"""Fixtures of the page's browser tests. Each test module defines a module-scoped `setup` fixture (usually
`helpers.browser.serve_page`) giving the server's "url" and the fake camera's "video"."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from helpers.browser import chromium, open_page


@pytest.fixture(scope="module")
def browser(setup: dict) -> Iterator[Any]:
    with chromium(setup["video"]) as browser:
        yield browser


@pytest.fixture
def page(browser: Any, setup: dict) -> Iterator[Any]:
    """A fresh browser session on /ui/ that records what it fetches from elsewhere and its errors."""
    page = open_page(browser, setup["url"])
    yield page
    page.context.close()
