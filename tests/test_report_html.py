"""report.html opens in a real browser (headless Chromium) with its tables and embedded images."""

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from freezetune.compare import CompareOptions, compare

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium not installed (apt-get install chromium); CI installs it to run this test"
)


def chromium(tmp_path, *args) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, check=True)


@pytest.fixture(scope="module")
def report(tiny_csv_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("html") / "out"
    compare(CompareOptions(output_dir=str(out), data=str(tiny_csv_dir), strategies=["lstm", "tfidf"], seeds=[0], epochs=1))
    return out / "report.html"


def test_report_renders_tables_and_embedded_images(report, tmp_path):
    dom = chromium(tmp_path, "--dump-dom", report.as_uri()).stdout
    assert dom.count("<table") == 4  # classes, summary, per-class, per-epoch
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', dom)
    assert len(images) == 3  # learning curves, F1 vs params, confusion matrix (no transformer runs here)
    assert "src=\"http" not in dom and "file:" not in dom  # self-contained


def test_report_screenshot_is_not_blank(report, tmp_path):
    shot = tmp_path / "shot.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,2000", report.as_uri())
    pixels = imread(shot)
    assert pixels.shape[0] > 100 and np.std(pixels[..., :3]) > 0.05
