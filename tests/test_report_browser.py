"""The HTML report opened in a real headless browser (Debian's ``chromium``).

What a reader sees is checked where a reader sees it: the findings are on the first screen at
1400 px and on a phone-sized one, the page never scrolls sideways, every figure decodes and is
not blank, and every number in the findings and the model x arm table equals what this test
computes itself (numpy, scipy) from results.json.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread
from scipy import stats as sps

from umdbench.report import render_report
from umdbench.report.synthetic import synthetic_results
from umdbench.report.tables import fmt
from umdbench.results import read_results, write_results

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium) - the HTML "
    "report cannot be checked in a browser here",
)

# Test-only probe appended to a copy of the report: opens every <details>, then writes what
# the browser laid out and decoded into the page, which --dump-dom prints.
_PROBE = """<script>
window.addEventListener('load', () => {
  const findings = document.getElementById('findings').getBoundingClientRect();
  const first = document.querySelector('#findings li[data-kind=gap]').getBoundingClientRect();
  const layout = {inner_width: window.innerWidth, inner_height: window.innerHeight,
                  scroll_width: document.documentElement.scrollWidth,
                  findings_top: findings.top, first_gap_bottom: first.bottom};
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  setTimeout(() => {
    const imgs = [...document.images];
    layout.images = imgs.length;
    layout.decoded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
    const out = document.createElement('pre');
    out.id = 'probe';
    out.textContent = JSON.stringify(layout);
    document.body.appendChild(out);
  }, 500);
});
</script>"""
_SCREENS = {"desktop": (1400, 900), "phone": (390, 700)}
# Headless Chromium keeps a window at least 500 px wide, so the phone is an iframe of that size.
_PHONE = """<!DOCTYPE html><html><body style="margin:0"><iframe id="phone" style="border:0;
width:{width}px;height:{height}px" srcdoc="{page}"></iframe><script>
window.addEventListener('load', () => setTimeout(() => {{
  const probe = document.getElementById('phone').contentDocument.getElementById('probe');
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = probe ? probe.textContent : 'null';
  document.body.appendChild(out);
}}, 1500));
</script></body></html>"""


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--no-first-run", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
               *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """A results.json (with a model named but unavailable, and one left out of the matrix),
    its report, and the document as read back from the file."""
    document = synthetic_results(seed=2)
    out = tmp_path_factory.mktemp("report")
    path = write_results(out / "results.json",
                         **{k: document[k] for k in ("run", "models", "cases", "records")})
    render_report(path, out, n_boot=2000)
    return read_results(path), out


def _dom(tmp_path: Path, page: Path, screen: str) -> tuple[str, dict[str, Any]]:
    probed = tmp_path / "probed.html"
    text = page.read_text().replace("</body>", _PROBE + "</body>")
    width, height = _SCREENS[screen]
    window = (width, height + 200)  # room for the browser's own bars
    if screen == "phone":
        text = _PHONE.format(width=width, height=height, page=html.escape(text, quote=True))
        window = (1000, 1000)
    probed.write_text(text)
    result = _chromium(tmp_path, f"--window-size={window[0]},{window[1]}",
                       "--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Uncaught" not in result.stderr
    probe = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout)
    assert probe, "the probe did not run: " + result.stderr[-2000:]
    return result.stdout, json.loads(html.unescape(probe.group(1)))


@pytest.mark.parametrize("screen", sorted(_SCREENS))
def test_findings_are_on_the_first_screen_and_nothing_scrolls_sideways(
    rendered: tuple[dict, Path], tmp_path: Path, screen: str
) -> None:
    _, layout = _dom(tmp_path, rendered[1] / "report.html", screen)
    width, height = _SCREENS[screen]
    visible = layout["inner_height"]
    assert layout["inner_width"] == width and abs(visible - height) < 0.25 * height, layout
    assert layout["findings_top"] < visible / 3, layout
    assert layout["first_gap_bottom"] < visible, layout  # the first gap is readable unscrolled
    assert layout["scroll_width"] <= width, layout  # wide tables scroll inside their box


def test_every_figure_decodes_and_is_not_blank(rendered: tuple[dict, Path], tmp_path: Path) -> None:
    page = (rendered[1] / "report.html").read_text()
    _, layout = _dom(tmp_path, rendered[1] / "report.html", "desktop")
    n_images = page.count("<img ")
    assert n_images >= 3 and layout["images"] == n_images == layout["decoded"], layout
    figures = re.findall(r"<figure id='([^']+)'><img alt='[^']*' src='data:image/png;base64,"
                         r"([A-Za-z0-9+/=]+)'>.*?href='data:text/csv;base64,([A-Za-z0-9+/=]+)'",
                         page)
    assert len(figures) == n_images  # every figure has its data beside it
    for name, png, data in figures:
        pixels = imread(io.BytesIO(base64.b64decode(png)), format="png")
        assert pixels[..., :3].std() > 0.05, name
        rows = base64.b64decode(data).decode().strip().splitlines()
        assert len(rows) >= 2, f"{name}: its CSV has no data row"
    for primary in ("illusion_dice", "forest_dice", "heatmap_dice"):
        assert f"<figure id='{primary}'>" in page


def test_the_phone_screenshot_shows_the_findings(rendered: tuple[dict, Path], tmp_path: Path) -> None:
    shot = tmp_path / "phone.png"
    result = _chromium(tmp_path, "--window-size=390,844", f"--screenshot={shot}",
                       (rendered[1] / "report.html").as_uri())
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (844, 390)
    bands = pixels.reshape(4, 211, 390, 3).std(axis=(1, 2, 3))
    assert np.all(bands > 0.05), bands  # text all the way down the first screen


# -- every number on the page, recomputed here from results.json -------------------------
def _label(item: dict[str, Any]) -> str:
    return item["model"] if not item.get("protocol") else f"{item['model']} [{item['protocol']}]"


def _ok_dice(document: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, float]]:
    """(label, arm, organ) -> subject -> Dice of ok records."""
    out: dict[tuple[str, str, str], dict[str, float]] = defaultdict(dict)
    for r in document["records"]:
        if r["status"] == "ok" and r.get("dice") is not None:
            out[(_label(r), r["modality"], r["organ"])][r["subject"]] = float(r["dice"])
    return out


def _ran(document: dict[str, Any]) -> set[str]:
    return {c["model"] for c in document["cases"] if c["outcome"] != "skipped"}


def _numbers(text: str, *names: str) -> list[float]:
    for name in sorted(names, key=len, reverse=True):  # labels and arms hold digits
        text = text.replace(name, " ")
    return [float(x) for x in re.findall(r"[-+]?\d+(?:\.\d+)?", text)]


def _p_text(p: float) -> list[float]:
    return [0.001] if p < 0.001 else [round(p, 3)]


def _expected_gap(dice: dict, label: str, arm_a: str, arm_b: str) -> tuple[list[float], tuple]:
    """The subject-level gap: each subject's mean over the organs scored on both arms."""
    per_subject: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for (lab, arm, organ), values in dice.items():
        if lab == label and arm == arm_a and (label, arm_b, organ) in dice:
            other = dice[(label, arm_b, organ)]
            for subject in set(values) & set(other):
                per_subject[subject].append((values[subject], other[subject]))
    diffs = np.array([np.mean([a for a, _ in v]) - np.mean([b for _, b in v])
                      for v in per_subject.values()])
    mean = float(diffs.mean())
    boot = sps.bootstrap((diffs,), np.mean, n_resamples=4000, method="percentile",
                         random_state=np.random.default_rng(1)).confidence_interval
    p = float(sps.wilcoxon(diffs).pvalue)
    size, low, high = (mean, boot.low, boot.high) if mean >= 0 else (-mean, -boot.high, -boot.low)
    return [round(size, 2), *_p_text(p), float(len(diffs))], (low, high)


def _findings(dom: str) -> list[tuple[str, str, str, str]]:
    return [(html.unescape(m), k, html.unescape(key), html.unescape(text)) for m, k, key, text in
            re.findall(r'<li class="\w+" data-model="([^"]*)" data-kind="(\w+)" '
                       r'data-key="([^"]*)">(.*?)</li>', dom)]


def test_every_number_in_the_findings_equals_results_json(
    rendered: tuple[dict, Path], tmp_path: Path
) -> None:
    document, out = rendered
    dom, _ = _dom(tmp_path, out / "report.html", "desktop")
    dice = _ok_dice(document)
    items = _findings(dom)
    ran = _ran(document)
    labels = {_label(c) for c in document["cases"] if c["model"] in ran}
    assert {m for m, *_ in items} == labels
    arms = document["run"]["cohort"]["modalities"]
    for label, kind, key, text in items:
        model = label.split(" [")[0]
        numbers = _numbers(text, label, *arms)
        if kind == "gap":
            arm_a, arm_b = key.split("~")
            expected, (low, high) = _expected_gap(dice, label, arm_a, arm_b)
            assert len(numbers) == 6 and numbers[1] == 95, text  # size, 95% CI low high, p, n
            assert [numbers[0], numbers[4], numbers[5]] == expected, text
            assert abs(numbers[2] - low) < 0.02 and abs(numbers[3] - high) < 0.02, (text, low, high)
        elif kind == "claim":
            published = document["models"][model]["literature"][key]["dice"]
            organs = {o: v for (lab, arm, o), v in dice.items() if lab == label and arm == key}
            measured = float(np.mean([np.mean(list(v.values())) for v in organs.values()]))
            subjects = {s for v in organs.values() for s in v}
            assert len(numbers) == 7 and numbers[2] == 95, text  # pub, measured, CI, n, gap
            assert numbers[:2] == [round(published, 2), round(measured, 2)], text
            assert numbers[3] <= round(measured, 2) <= numbers[4], text
            assert numbers[5:] == [len(subjects), round(measured - published, 2)], text
        else:
            cases = [c["outcome"] for c in document["cases"] if _label(c) == label]
            passed = cases.count("passed") + cases.count("xpassed")
            others = [cases.count(o) for o in ("failed", "xfailed", "error", "skipped")]
            assert numbers == [passed, len(cases), *(n for n in others if n)], text
    summary = html.unescape(re.search(r'<p id="summary">(.*?)</p>', dom).group(1))
    cohort = document["run"]["cohort"]
    ran_cases = [c for c in document["cases"] if c["model"] in ran]
    passing = sum(c["outcome"] in ("passed", "xpassed") for c in ran_cases)
    not_run = {c["model"] for c in document["cases"]} - ran | {
        m["model"] for m in document["run"]["models_not_run"]}
    assert _numbers(summary, *arms) == [len(ran), len(cohort["subjects"]), passing,
                                         len(ran_cases), len(not_run)], summary


def test_the_model_arm_table_and_case_table_equal_results_json(
    rendered: tuple[dict, Path], tmp_path: Path
) -> None:
    document, out = rendered
    dom, _ = _dom(tmp_path, out / "report.html", "desktop")
    dice = _ok_dice(document)
    cells = re.findall(r'<td class="cell" data-model="([^"]*)" data-arm="([^"]*)"[^>]*>'
                       r"([^<]*)<small>(\d+)/(\d+) pass</small></td>", dom)
    ran = _ran(document)
    expected_cells = {(_label(c), c["modality"]) for c in document["cases"] if c["model"] in ran}
    assert {(html.unescape(m), a) for m, a, *_ in cells} == expected_cells
    for label, arm, shown, passed, total in cells:
        label = html.unescape(label)
        organs = [v for (lab, a, _), v in dice.items() if lab == label and a == arm]
        assert shown == fmt(float(np.mean([np.mean(list(v.values())) for v in organs])))
        cases = [c for c in document["cases"] if _label(c) == label and c["modality"] == arm]
        assert (int(passed), int(total)) == (
            sum(c["outcome"] in ("passed", "xpassed") for c in cases), len(cases))
    for case in document["cases"]:
        if case["model"] in ran:
            assert html.escape(case["case_id"]) in dom
            if case["value"] is not None and math.isfinite(case["value"]):
                assert f">{fmt(case['value'])}<" in dom


def test_models_that_did_not_run_are_one_section_not_rows(
    rendered: tuple[dict, Path], tmp_path: Path
) -> None:
    out = rendered[1]
    dom, _ = _dom(tmp_path, out / "report.html", "desktop")
    section = re.search(r"<section id=\"not-run-section\">(.*?)</section>", dom, re.S)
    assert section, "no 'Models not run' section"
    for model in ("vista3d", "sam-med3d"):  # named but unavailable; left out of the matrix
        assert f"<td>{model}</td>" in section.group(1)
    assert "weights not found under UMD_WEIGHTS/vista3d" in section.group(1)
    rest = dom.replace(section.group(0), "")
    assert "vista3d" not in rest.split('<pre id="provenance">')[0]
    assert dom.index('id="findings"') < dom.index('id="model-arm"') < dom.index(
        'id="not-run-section"') < dom.index('id="figures"') < dom.index('id="details"')
