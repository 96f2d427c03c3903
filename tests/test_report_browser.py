"""The HTML report opened in a real headless browser (Debian's ``chromium``)."""

from __future__ import annotations

import html
import io
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread

from umdbench.report import render_report
from umdbench.report.synthetic import synthetic_results
from umdbench.report.tables import fmt

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium) - the HTML "
    "report cannot be checked in a browser here",
)

# Test-only probe appended to a copy of the report: counts images the browser decoded.
_PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const out = document.createElement('div');
  out.id = 'probe';
  out.textContent = `images=${imgs.length} decoded=${ok}`;
  document.body.appendChild(out);
});
</script>"""


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    document = synthetic_results(seed=2)
    out = tmp_path_factory.mktemp("report")
    render_report(document, out, n_boot=500)
    return document, out


def test_report_loads_and_every_plot_decodes(rendered: tuple[dict, Path], tmp_path: Path) -> None:
    document, out = rendered
    page = (out / "report.html").read_text()
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", _PROBE + "</body>"))
    result = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    n_images = page.count("<img ")
    assert n_images == 16
    assert f'<div id="probe">images={n_images} decoded={n_images}</div>' in dom
    assert "Uncaught" not in result.stderr
    for case in document["cases"]:  # the per-case table holds the results file's figures
        assert html.escape(case["case_id"]) in dom
        if case["value"] is not None:
            assert f">{fmt(case['value'])}<" in dom


def test_embedded_pngs_are_not_blank(rendered: tuple[dict, Path]) -> None:
    import base64

    page = (rendered[1] / "report.html").read_text()
    blobs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(blobs) == 16
    for blob in blobs:
        pixels = imread(io.BytesIO(base64.b64decode(blob)), format="png")
        assert pixels[..., :3].std() > 0.05


def test_screenshot_shows_tables_and_plots(rendered: tuple[dict, Path], tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    result = _chromium(tmp_path, "--window-size=1400,9000", f"--screenshot={shot}",
                       (rendered[1] / "report.html").as_uri())
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (9000, 1400)
    bands = pixels.reshape(18, 500, 1400, 3).std(axis=(1, 2, 3))
    assert np.count_nonzero(bands > 0.05) >= 12, bands  # content all the way down the page
