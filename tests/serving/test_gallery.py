"""The HTML contact sheet: files only under out_dir, named by segment_key, escaped, the same bytes again, and
(with Debian's Chromium) pages that load, show every image, run no injected script and link to each other."""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from prefgen.serving.gallery import Gallery, segment_key, write_gallery

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TITLE = 'Nightly <run> & "co"'
PLAIN, EVIL = "young-urban", "../evil<b>"
HOSTILE = "a star <script>window.__pwned=1</script>"
QUOTED = "\"quoted\" & 'apostrophe' <i>"
# (segment, prompt, seed): seeds deliberately out of order, so the test sees the page and grid sort them.
IMAGES = [
    (PLAIN, "a cat", 7), (PLAIN, "a cat", 3), (PLAIN, "a dog", 1),
    (EVIL, HOSTILE, 2), (EVIL, HOSTILE, 0), (EVIL, QUOTED, 5), (EVIL, HOSTILE, 1),
]


def colour(k: int) -> tuple[int, int, int]:
    return (40 * k % 256, 255 - 30 * k, 90 + 20 * k)


def make_run(root: Path) -> pl.DataFrame:
    """Tiny distinct-coloured PNGs under root/images/<sha>.png and their manifest rows."""
    rows = []
    for k, (segment, prompt, seed) in enumerate(IMAGES):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), colour(k)).save(buffer, format="PNG")
        sha = hashlib.sha256(buffer.getvalue()).hexdigest()
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "images" / f"{sha}.png").write_bytes(buffer.getvalue())
        rows.append({
            "segment": segment, "prompt": prompt, "seed": seed, "image_sha256": sha, "file": f"images/{sha}.png",
            "preference_score": 0.1 * k, "text_score": 1.0 - 0.1 * k,
            "bundle_model": "prefgen-bundle", "bundle_version": "3",
        })
    return pl.DataFrame(rows)


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "img":
            self.imgs.append(found["src"] or "")
        elif tag == "a":
            self.hrefs.append(found["href"] or "")


def links(page: Path) -> Links:
    parser = Links()
    parser.feed(page.read_text())
    return parser


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def gallery(tmp_path) -> Gallery:
    run = tmp_path / "run"
    return write_gallery(make_run(run), run, run / "gallery", TITLE, columns=3)


def test_files_stay_under_out_dir_named_by_key_escaped_and_deterministic(tmp_path, gallery):
    run, out = tmp_path / "run", tmp_path / "run" / "gallery"
    assert segment_key(EVIL) == hashlib.sha256(EVIL.encode()).hexdigest()[:16]
    assert gallery.index == out / "index.html"
    for segment in (PLAIN, EVIL):
        assert gallery.pages[segment] == out / "segments" / f"{segment_key(segment)}.html"
        assert gallery.grids[segment] == out / "segments" / f"{segment_key(segment)}.png"
    written = {gallery.index, *gallery.pages.values(), *gallery.grids.values()}
    assert files_under(out) == written  # no temporary file left, nothing else
    assert files_under(tmp_path) - written == files_under(run / "images")  # nothing escaped out_dir

    # The evil segment's four images, three a row, 64 px cells and 2 px gaps: the hostile prompt's seeds
    # 0, 1, 2 (IMAGES[4], [6], [3]), then the second prompt's only image (IMAGES[5]) alone on row two.
    with Image.open(gallery.grids[EVIL]) as grid:
        assert grid.size == (3 * 64 + 2 * 2, 2 * 64 + 2)
        tiles = [grid.getpixel((x, y)) for y in (0, 66) for x in (0, 66, 132)]
        assert tiles == [colour(4), colour(6), colour(3), colour(5), (255, 255, 255), (255, 255, 255)]
        assert grid.getpixel((64, 0)) == grid.getpixel((0, 64)) == (255, 255, 255)  # the gaps

    evil = gallery.pages[EVIL].read_text()
    assert "<script" not in evil and "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in evil
    assert "&quot;quoted&quot; &amp; &#x27;apostrophe&#x27; &lt;i&gt;" in evil and "<i>" not in evil
    assert "../evil&lt;b&gt;" in evil and "../evil&lt;b&gt;" in gallery.index.read_text()
    assert "http:" not in evil and "https:" not in evil and "&lt;run&gt; &amp; &quot;co&quot;" in evil
    for page in (gallery.index, *gallery.pages.values()):
        found = links(page)
        for ref in found.imgs + found.hrefs:
            assert not os.path.isabs(ref) and (page.parent / ref).resolve().is_file(), ref
    seeds = [int(s) for s in re.findall(r"<figcaption>seed (\d+)", evil)]
    assert seeds == [0, 1, 2, 5]  # prompts in manifest order, images by seed

    before = {path: path.read_bytes() for path in written}
    again = write_gallery(make_run(run), run, out, TITLE, columns=3)
    assert again == gallery and {path: path.read_bytes() for path in written} == before


def test_missing_column_or_image_is_a_clear_error(tmp_path):
    run = tmp_path / "run"
    manifest = make_run(run)
    with pytest.raises(ValueError, match="text_score"):
        write_gallery(manifest.drop("text_score", "bundle_version"), run, tmp_path / "out", "t")
    gone = manifest["file"][3]
    (run / gone).unlink()
    with pytest.raises(ValueError, match=re.escape(gone)):
        write_gallery(manifest, run, tmp_path / "out", "t")
    assert not (tmp_path / "out").exists()  # nothing half-written


def require_chromium(path: Path) -> Path:
    """`path` if it exists; else a skip with the reason, or a failure under CI (env CI set), where the browser test must run."""
    if not path.exists():
        reason = f"{path} is absent; install Debian's chromium with .ci/install-chromium"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test: {reason}")
        pytest.skip(reason)
    return path


def test_a_missing_chromium_fails_in_ci_and_skips_with_the_reason_elsewhere(tmp_path, monkeypatch):
    absent = tmp_path / "chromium"
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=re.escape(f"CI must run the browser test: {absent} is absent")):
        require_chromium(absent)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=re.escape(f"{absent} is absent; install Debian's chromium")):
        require_chromium(absent)
    absent.write_bytes(b"")
    assert require_chromium(absent) == absent  # once it exists it is handed back


@contextmanager
def chromium_page() -> Iterator[tuple[object, list[str]]]:
    """(a page of headless Chromium, the URLs of the requests that failed so far); the browser closes after."""
    from playwright.sync_api import sync_playwright

    chromium = require_chromium(CHROMIUM)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            failed: list[str] = []
            page.on("requestfailed", lambda request: failed.append(request.url))
            yield page, failed
        finally:
            browser.close()


@pytest.mark.browser
def test_pages_in_headless_chromium(gallery):
    with chromium_page() as (page, failed):
        for segment, path in gallery.pages.items():
            page.goto(path.as_uri())
            assert page.title() == f"{TITLE} — {segment}"
            count = sum(1 for s, _, _ in IMAGES if s == segment)
            assert page.evaluate("document.images.length") == count
            assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth === 64)")
            text = page.evaluate("document.body.innerText")
            assert segment in text and "prefgen-bundle v3" in text
        assert HOSTILE in text and QUOTED in text  # the evil page was the last one loaded
        assert page.evaluate("typeof window.__pwned") == "undefined"

        for segment, path in gallery.pages.items():
            page.goto(gallery.index.as_uri())
            assert page.title() == TITLE
            assert page.locator("a").count() == len(gallery.pages)
            page.get_by_role("link", name=segment, exact=True).click()
            page.wait_for_url(path.as_uri())
            assert page.title() == f"{TITLE} — {segment}"
            page.get_by_role("link", name="all segments").click()
            page.wait_for_url(gallery.index.as_uri())
        assert not failed
