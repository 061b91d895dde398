"""The static dashboard: escaping of untrusted text, and a real browser session (headless
Chromium via Playwright): the index loads without console errors, search filters the list, and a
latent page shows its examples."""

import json
import shutil

import pytest

from superposition.report.dashboard import LatentPage, TokenSpan, json_for_script, write_dashboard

EVIL = "</script><script>alert('x')</script><img src=x onerror=alert(1)>"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _evil_site(tmp_path, extra_pages=0):
    rows = [
        {"id": 0, "density": 0.5, "top_logits": EVIL},
        {"id": 1, "density": 0.01, "top_logits": "harmless"},
    ]
    page = LatentPage(
        0,
        {"note": EVIL},
        histogram=([1, 2, 3], [0.0, 1.0, 2.0, 3.0]),
        top=[[TokenSpan(EVIL, 1.0, 1.0, True), TokenSpan(" ok", 0.0, 0.0)]],
        tables=[("Logit lens", ["token", "logit"], [[EVIL, 1.5]])],
        bars=[("cos", [EVIL], [0.5])],
    )
    cols = [
        {"key": "id", "label": "latent", "type": "num"},
        {"key": "density", "label": "density", "type": "num"},
        {"key": "top_logits", "label": "tokens", "type": "text"},
    ]
    pages = [page, LatentPage(1, {})] + [LatentPage(2 + i, {}) for i in range(extra_pages)]
    return write_dashboard(tmp_path / "site", "t", "s", cols, rows, pages)


def test_untrusted_text_never_becomes_markup(tmp_path):
    site = _evil_site(tmp_path)
    index = (site / "index.html").read_text()
    assert "<script>alert" not in index and "<img" not in index
    data = index.split('<script type="application/json" id="data">')[1].split("</script>")[0]
    assert json.loads(data)["rows"][0]["top_logits"] == EVIL  # intact once parsed
    page = (site / "latents" / "0.html").read_text()
    assert "<script" not in page and "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert json_for_script({"a": "</script>&"}) == '{"a":"\\u003c/script\\u003e\\u0026"}'


def test_rewriting_a_site_replaces_it_whole(tmp_path):
    site = _evil_site(tmp_path, extra_pages=3)  # an earlier, larger site
    assert (site / "latents" / "4.html").is_file()
    _evil_site(tmp_path)
    assert not (site / "latents" / "4.html").exists() and (site / "latents" / "1.html").is_file()


def test_a_site_with_files_of_the_users_is_never_replaced(tmp_path):
    from superposition.errors import SuperpositionError

    site = _evil_site(tmp_path)
    (site / "notes.md").write_text("mine")
    with pytest.raises(SuperpositionError, match=r"holds files superposition did not write \(notes.md\)"):
        _evil_site(tmp_path)
    assert (site / "notes.md").read_text() == "mine" and (site / "index.html").is_file()


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium (apt-get install chromium); .ci/run installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def _open(browser, url):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (errors.append("dialog: " + d.message), d.dismiss()))
    page.goto(url)
    return page, errors


def test_lm_dashboard_in_a_browser(browser, tiny_run, tmp_path):
    from superposition.cli import main

    site = tmp_path / "site"
    assert main(["dashboard", str(tiny_run), "--out", str(site), "--sequences", "8", "--latents", "200"]) == 0
    page, errors = _open(browser, (site / "index.html").as_uri())
    rows = page.locator("#latents tbody tr")
    assert rows.count() == 200 and errors == []
    data = json.loads(page.locator("#data").text_content())
    word = next(r["top_logits"].split()[0] for r in data["rows"] if r["top_logits"].strip())
    page.fill("#search", word)
    n = rows.count()
    assert 0 < n < 200
    assert all(word.lower() in rows.nth(i).inner_text().lower() for i in range(n))
    page.fill("#search", "")
    page.click("th[data-key=density]")  # sort: densest first
    dens = [float(rows.nth(i).locator("td").nth(1).inner_text()) for i in range(5)]
    assert dens == sorted(dens, reverse=True) and dens[0] > 0
    page.screenshot(path=str(tmp_path / "index.png"))
    rows.nth(0).locator("a").click()  # the densest latent has examples
    page.wait_for_load_state()
    assert page.locator("h1").inner_text().startswith("Latent ")
    assert page.locator(".example").count() >= 5 and page.locator("svg.hist rect").count() == 30
    assert page.locator("text=Logit lens: top tokens").count() == 1
    page.screenshot(path=str(tmp_path / "latent.png"), full_page=True)
    assert errors == []


def test_hostile_text_runs_no_script_in_a_browser(browser, tmp_path):
    site = _evil_site(tmp_path)
    for url in ((site / "index.html").as_uri(), (site / "latents" / "0.html").as_uri()):
        page, errors = _open(browser, url)
        page.wait_for_timeout(200)
        assert errors == [], url
    page, _ = _open(browser, (site / "index.html").as_uri())
    assert EVIL in page.locator("#latents tbody").inner_text()  # shown as text
