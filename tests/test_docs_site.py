"""The documentation site browses from the file system, as the README tells users to open it.

``make docs`` builds ``site/`` and the README says "open site/index.html". Under ``file://`` a folder link
(``getting-started/``) shows a bare directory listing and the search index cannot be fetched, so the site is built
with ``.html`` links and Material's offline search (mkdocs.yml). These tests build the site into a temporary folder,
open it in headless Chromium through ``file://``, follow the home page's navigation and run a search.
"""

from __future__ import annotations

import html
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit
from urllib.request import url2pathname

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = next((path for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
                 if (path := shutil.which(name))), None)
# (label in the home page's navigation, heading of the page it links to): a top-level page and one in a section
PAGES = [("Getting started", "Getting started"), ("Task families", "Task families")]

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (chromium, chromium-browser or google-chrome)"),
    pytest.mark.skipif(any(importlib.util.find_spec(name) is None for name in ("mkdocs", "material", "mkdocstrings")),
                       reason="needs the docs extra (pip install -e '.[docs]')"),
]


class _Links(HTMLParser):
    """Collects the navigation links of a Material page as (text, href), in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "a" and "md-nav__link" in (attributes.get("class") or "").split():
            self._href, self._text = attributes.get("href"), []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((" ".join("".join(self._text).split()), self._href))
            self._href = None


def _dom(url: str, profile: Path, wait_ms: int = 0) -> str:
    """The page's DOM after its scripts ran, as headless Chromium renders it from ``url``."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
               "--disable-background-networking", "--disable-component-update", f"--user-data-dir={profile}"]
    if wait_ms:
        command.append(f"--virtual-time-budget={wait_ms}")
    result = subprocess.run([*command, "--dump-dom", url], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _path(url: str) -> Path:
    return Path(url2pathname(urlsplit(url).path))


def _heading(dom: str) -> str | None:
    """The text of the page's first ``<h1>`` (without Material's permalink sign), None if it has none."""
    match = re.search(r"<h1[^>]*>(.*?)</h1>", dom, flags=re.DOTALL)
    if match is None:
        return None
    return html.unescape(re.sub(r"<a class=\"headerlink\".*?</a>|<[^>]+>", "", match[1])).strip()


def _polyfills() -> list[str]:
    """The scripts that mkdocs.yml puts before the theme's bundle (extra.polyfills)."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    return list((config.get("extra") or {}).get("polyfills") or [])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built by the repository's mkdocs.yml (as ``make docs`` builds it) into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-f",
                             str(ROOT / "mkdocs.yml"), "-d", str(out)], cwd=ROOT, capture_output=True, text=True,
                            timeout=180, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def test_the_home_pages_navigation_opens_the_linked_pages_from_the_file_system(site, tmp_path):
    home = (site / "index.html").as_uri()
    parser = _Links()
    parser.feed(_dom(home, tmp_path / "profile"))
    links = dict(reversed(parser.links))  # the first link of each label (the primary navigation's)
    for label, heading in PAGES:
        assert label in links, f"no navigation link {label!r} on the home page: {sorted(links)}"
        url = urljoin(home, links[label])
        assert _path(url).is_file(), f"{label!r} links to {links[label]!r}: under file:// that is not a page"
        dom = _dom(url, tmp_path / "profile")
        assert _heading(dom) == heading, f"{url} shows {dom[:1000]!r}"


def test_search_works_from_the_file_system_without_a_network(site, tmp_path):
    assert not any(str(src).startswith("http") for src in _polyfills()), "search would need a network"
    url = (site / "index.html").as_uri() + "?q=estimator"
    dom = _dom(url, tmp_path / "profile", wait_ms=5000)
    found = re.search(r'class="md-search-result__meta">(\d+) matching document', dom)  # the count above the hits
    assert found is not None and int(found[1]) > 0, "search found nothing from file://"

