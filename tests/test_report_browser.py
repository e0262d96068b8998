"""report.html opens in a real browser (headless Chromium): videos and the loss curve render."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from tempoflow.cli import main

from .conftest import TINY

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
]


@pytest.mark.slow
def test_report_renders_in_chromium(tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.fail("this test needs Debian's chromium package: apt-get install chromium")
    run = tmp_path / "demo"
    assert main(["demo", "--config", "demo", *TINY, f"out_dir={run}", "train.steps=20"]) == 0
    report = run / "eval" / "report.html"
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([browser, *flags, "--dump-dom", report.as_uri()], capture_output=True, text=True,
                         timeout=120, check=False)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("data:image/gif;base64,") == 2 and "Training loss" in dom.stdout
    assert "Uncaught" not in dom.stderr and "ERROR:CONSOLE" not in dom.stderr

    shot = tmp_path / "report.png"
    proc = subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1100,2600", report.as_uri()],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    # the page is mostly white, and the embedded GIFs put black backgrounds (the shapes' scene)
    # and the loss curve's blue line on it: all three must be visible (the window is tall enough to
    # reach the loss curve below the metric tables, samples and PSNR-vs-time chart)
    assert (pixels.min(1) > 240).mean() > 0.3
    assert (pixels.max(1) < 20).sum() > 1000
    assert ((abs(pixels - [31, 119, 180]).sum(1)) < 40).sum() > 50
