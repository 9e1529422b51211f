"""`netdsl serve`'s page in a real headless browser (Debian's Chromium through chromedriver and
selenium): it loads the zoo's hardest drawings, unfolds on click, highlights between drawing and
table, follows saves within 2 s, shows a broken edit in place over the last drawing, marks a
diff's changed stage, exports SVG and PNG, and cannot read outside the served directory.

One browser for the module. Skipped, saying why, where selenium, Chromium or its driver is missing
(README "Set-up" installs them: apt-get install chromium chromium-driver)."""

from __future__ import annotations

import base64
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from netdsl import serve

ROOT = Path(__file__).resolve().parent.parent
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

pytestmark = [
    pytest.mark.skipif(BROWSER is None, reason="no Chromium found (apt-get install chromium)"),
    pytest.mark.skipif(DRIVER is None, reason="no chromedriver found (apt-get install chromium-driver)"),
    pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed"),
]

SMALL = """network small(width=8) {
  input [3, 16, 16]
  stem: conv(width, 3, pad=1)
  body: {
    conv(width, 3, pad=1)
    relu
  }
  head: {
    adaptive_avgpool(1)
    flatten
    linear(10)
  }
}
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A copy of networks/ (edits change the copies), a variant of ResNet-50, a small network, and a
    file outside it all."""
    top = tmp_path_factory.mktemp("viewer")
    root = top / "site"
    shutil.copytree(ROOT / "networks", root)
    (root / "resnet50_deep3.net").write_text(
        (root / "resnet50.net").read_text().replace("network resnet50 = resnet(depth=50)",
                                                    "network resnet50_deep3 = resnet(depth=50)"))
    (root / "small.net").write_text(SMALL)
    (top / "secret.net").write_text(SMALL)
    (root / "link.net").symlink_to(top / "secret.net")
    return root


@pytest.fixture(scope="module")
def base(site):
    viewer = serve.start(site, port=0)
    threading.Thread(target=viewer.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{viewer.server_address[1]}"
    viewer.shutdown()
    viewer.server_close()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1500,950"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    yield driver
    driver.quit()


def _loads(browser) -> int:
    return int(browser.find_element(By.TAG_NAME, "body").get_attribute("data-loads") or 0)


def _open(browser, base: str, query: str) -> None:
    browser.get(f"{base}/?{query}")
    WebDriverWait(browser, 20).until(lambda b: _loads(b) >= 1)


def _after_load(browser, before: int, timeout: float = 10) -> None:
    WebDriverWait(browser, timeout, poll_frequency=0.05).until(lambda b: _loads(b) > before)


def _items(browser, side: str = "a"):
    return browser.find_elements(By.CSS_SELECTOR, f"#pane-{side} svg g.item")


def _toggles(browser, kind: str) -> dict[str, object]:
    return {element.get_attribute("data-toggle"): element
            for element in browser.find_elements(By.CSS_SELECTOR, f"#pane-a svg g.{kind}")}


def _streaming(browser) -> None:
    WebDriverWait(browser, 10).until(lambda b: b.execute_script(
        "return window.netdslViewer.state.source && window.netdslViewer.state.source.readyState === 1"))


def _save(path: Path, text: str) -> None:
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))  # a change even on a coarse clock


@pytest.mark.parametrize("name, folded", [
    ("resnet152", {"layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1", "layer4.0", "layer4.1"}),
    ("googlenet", {"inception3a.branch1", "inception3a.branch4", "inception5b.branch2"}),
    ("nasnet_a_large", {"cell_stem_0", "cell_stem_1", "cell_0", "reduction_cell_0", "reduction_cell_1", "cell_17"}),
])
def test_page_loads_with_the_expected_folded_nodes(browser, base, name, folded):
    _open(browser, base, f"file={name}.net")
    assert not browser.find_element(By.CSS_SELECTOR, "#pane-a .error").is_displayed()
    assert folded <= set(_toggles(browser, "expandable"))
    assert len(_items(browser)) >= len(folded)
    assert browser.find_element(By.CSS_SELECTOR, "#pane-a .sizes").text.startswith("valid inputs:")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#summary tr[data-path]")) > 10
    if name == "resnet152":
        assert "×35" in _toggles(browser, "expandable")["layer3.1"].text


def test_a_click_unfolds_a_block_and_another_folds_it(browser, base):
    _open(browser, base, "file=resnet50.net")
    assert not any(p.startswith("layer1.0.") for p in browser.execute_script(
        "return Object.values(netdslViewer.state.views.a.items).flatMap(i => i.paths)"))
    before = _loads(browser)
    _toggles(browser, "expandable")["layer1.0"].click()
    _after_load(browser, before)
    paths = browser.execute_script(
        "return Array.from(document.querySelectorAll('#pane-a g.item')).flatMap("
        "g => netdslViewer.state.views.a.items[g.dataset.name].paths)")
    assert {"layer1.0.conv1", "layer1.0.conv3"} <= set(paths)  # its layers are drawn now
    assert "layer1.0" in _toggles(browser, "collapsible")
    before = _loads(browser)
    browser.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))",
                           _toggles(browser, "collapsible")["layer1.0"])
    _after_load(browser, before)
    assert "layer1.0" in _toggles(browser, "expandable")


def test_hover_shows_the_node_facts_and_the_table_and_drawing_highlight_each_other(browser, base):
    _open(browser, base, "file=resnet50.net")
    conv1 = next(element for element in _items(browser) if "conv1" in element.text and "7×7" in element.text)
    ActionChains(browser).move_to_element(conv1).perform()
    tooltip = browser.find_element(By.ID, "tooltip")
    WebDriverWait(browser, 5).until(lambda b: tooltip.is_displayed())
    text = tooltip.text
    assert "conv1" in text and "resnet.net:" in text and "3×224×224 → 64×112×112" in text
    assert "9,408 params" in text and "118.01 M MACs" in text and "memory 802,816 elements" in text
    conv1.click()
    assert browser.find_element(By.CSS_SELECTOR, "#summary tr.selected").get_attribute("data-path") == "conv1"
    browser.find_element(By.CSS_SELECTOR, '#summary tr[data-path="layer3"]').click()
    selected = browser.find_elements(By.CSS_SELECTOR, "#pane-a g.selected")
    assert selected and all(browser.execute_script(
        "return netdslViewer.state.views.a.items[arguments[0].dataset.name].paths.every(p => p.startsWith('layer3'))",
        element) for element in selected)
    assert "conv1" not in [tr.get_attribute("data-path")
                           for tr in browser.find_elements(By.CSS_SELECTOR, "#summary tr.selected")]


def test_a_save_updates_the_page_within_two_seconds_and_a_broken_one_keeps_the_drawing(browser, base, site):
    path = site / "small.net"
    _open(browser, base, "file=small.net")
    _streaming(browser)
    before = _loads(browser)
    started = time.monotonic()
    _save(path, SMALL.replace("width=8", "width=24"))
    _after_load(browser, before, timeout=2)
    assert time.monotonic() - started < 2
    assert "24×16×16" in browser.find_element(By.CSS_SELECTOR, "#pane-a svg").text
    before = _loads(browser)
    _save(path, SMALL.replace("width=8", "width=24").replace("linear(10)", "linear(10"))
    _after_load(browser, before, timeout=2)
    error = browser.find_element(By.CSS_SELECTOR, "#pane-a .error")
    assert error.is_displayed()
    lines = error.text.splitlines()
    assert lines[0].startswith(f"{path}:12:") and ": error: " in lines[0]
    assert lines[1].strip().startswith("12 |") and "^" in lines[2]
    assert "24×16×16" in browser.find_element(By.CSS_SELECTOR, "#pane-a svg").text  # the last drawing stays
    before = _loads(browser)
    _save(path, SMALL)
    _after_load(browser, before, timeout=2)
    assert not error.is_displayed() and "8×16×16" in browser.find_element(By.CSS_SELECTOR, "#pane-a svg").text


def test_diff_view_marks_the_changed_stage(browser, base, site):
    variant = site / "resnet50_deep3.net"
    variant.write_text(variant.read_text().replace("resnet(depth=50)", "resnet(depth=101)"))  # layer3: 6 → 23 units
    _open(browser, base, "file=resnet50.net&other=resnet50_deep3.net")
    WebDriverWait(browser, 10).until(lambda b: b.find_element(By.ID, "pane-b").is_displayed())
    assert browser.execute_script("return netdslViewer.state.diff.changed") == ["layer3"]
    for side in "ab":
        changed = browser.find_elements(By.CSS_SELECTOR, f"#pane-{side} g.changed")
        assert changed and all(browser.execute_script(
            f"return netdslViewer.state.views.{side}.items[arguments[0].dataset.name].paths"
            ".every(p => p === 'layer3' || p.startsWith('layer3.'))", element) for element in changed)
    assert "changed" in browser.find_element(By.CSS_SELECTOR, '#summary tr[data-path="layer3"]').get_attribute("class")
    assert "changed" not in browser.find_element(By.CSS_SELECTOR, '#summary tr[data-path="layer2"]').get_attribute("class")
    assert "1 changed" in browser.find_element(By.ID, "diff").text


def test_a_file_of_several_networks_offers_a_choice(browser, base, site):
    (site / "two.net").write_text("network a { input [3, 8, 8] conv(4, 3) }\nnetwork b { input [3, 8, 8] conv(8, 3) }\n")
    _open(browser, base, "file=two.net")
    choice = Select(browser.find_element(By.ID, "network"))
    assert [option.text for option in choice.options] == ["a", "b"]
    assert browser.find_element(By.CSS_SELECTOR, "#pane-a .title").text.startswith("a ")
    before = _loads(browser)
    choice.select_by_value("b")
    _after_load(browser, before)
    assert browser.find_element(By.CSS_SELECTOR, "#pane-a .title").text.startswith("b ")
    assert "network=b" in browser.current_url


def test_export_svg_and_png(browser, base):
    _open(browser, base, "file=small.net")
    svg = browser.execute_script("return netdslViewer.svgText()")
    assert svg.startswith("<svg") and 'xmlns="http://www.w3.org/2000/svg"' in svg and "stem" in svg
    url = browser.execute_async_script(
        "const done = arguments[arguments.length - 1]; netdslViewer.pngDataURL().then(done, e => done(String(e)))")
    assert url.startswith("data:image/png;base64,")
    png = base64.b64decode(url.split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width > 100 and height > 300


def test_the_page_cannot_read_outside_the_served_directory(browser, base):
    _open(browser, base, "file=small.net")
    statuses = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const paths = ["/api/view?file=../secret.net", "/api/view?file=%2Fetc%2Fpasswd", "/files/link.net",
                       "/files/%2e%2e%2fsecret.net", "/files/small.net"];
        Promise.all(paths.map(p => fetch(p).then(r => r.status))).then(done);""")
    assert statuses == [403, 403, 403, 403, 200]
    _open(browser, base, "file=../secret.net")
    error = browser.find_element(By.CSS_SELECTOR, "#pane-a .error")
    assert error.is_displayed() and "outside the served directory" in error.text


def test_screenshots_of_the_viewer(browser, base, tmp_path):
    """The README's screenshots, taken as a user sees the page: ResNet-50 with layer1's first block
    unfolded, its layers hovered and its row selected; ResNet-50 against ResNet-101 as a diff, scrolled
    to the stage that differs.
    Saved into docs/images/ with NETDSL_SCREENSHOTS=1, else only checked."""
    into = ROOT / "docs" / "images" if os.environ.get("NETDSL_SCREENSHOTS") else tmp_path
    _open(browser, base, "file=resnet50.net")
    before = _loads(browser)
    _toggles(browser, "expandable")["layer1.0"].click()
    _after_load(browser, before)
    table = next(element for element in _items(browser) if "conv2" in element.text and "3×3" in element.text)
    ActionChains(browser).move_to_element(table).perform()
    WebDriverWait(browser, 5).until(lambda b: b.find_element(By.ID, "tooltip").is_displayed())
    shots = {"viewer_resnet50.png": browser.get_screenshot_as_png()}
    _open(browser, base, "file=resnet50.net&other=resnet101.net")
    browser.execute_script("for (const side of ['a', 'b']) document.querySelector(`#pane-${side} g.changed`)"
                           ".scrollIntoView({block: 'center', inline: 'nearest'})")  # the changed stage in view
    shots["viewer_diff.png"] = browser.get_screenshot_as_png()
    for name, png in shots.items():
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000  # a drawn page, not a blank one
        (into / name).write_bytes(png)
