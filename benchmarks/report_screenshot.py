"""Render a report.html in headless Chromium: a screenshot, and a check that every plot decoded.

    .venv/bin/python benchmarks/report_screenshot.py --html EVALUATION_DIR/report.html --png shot.png
    .venv/bin/python benchmarks/report_screenshot.py --png shot.png        # a demo report

Needs ``chromium`` (``apt-get install -y chromium``). The check loads a copy of the page with a small
script that, once the page has loaded, writes each image's decoded width into the DOM; ``--dump-dom``
then shows whether every embedded plot rendered (a broken image has natural width 0). Exits 1 if one
did not, 2 if Chromium is missing.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = """<script>window.addEventListener('load', () => {
  const widths = Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0);
  const out = document.createElement('pre'); out.id = 'image-probe';
  out.textContent = 'IMAGES ' + widths.join(',');
  document.body.appendChild(out);
});</script></body>"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def demo_report(path: Path) -> None:
    """A report with every section, as `batchrl evaluate` writes it, from fixed numbers."""
    from batchrl.evaluation.report import render_html

    est = {"raw": 0.8, "normalized": 1.05, "ci_low": 0.7, "ci_high": 0.9, "normalized_ci_low": 0.93,
           "normalized_ci_high": 1.16}
    metrics = {"model": "demo", "eval": "demo", "gamma": 0.99, "passing_score_bar": 120.0, "passed": True,
               "gym": {"env": "CartPole-v0", "episodes": 50, "mean_return": 182.0, "std_return": 30.0,
                       "ci_low": 173.0, "ci_high": 190.0, "min_return": 90.0, "max_return": 200.0,
                       "mean_discounted_return": 80.0, "returns": [200.0] * 35 + [90.0 + 7 * i for i in range(15)]},
               "cpe": {"estimates": {n: {**est, "normalized": est["normalized"] + 0.03 * i}
                                     for i, n in enumerate(["DM", "IPS", "SNIPS", "DR", "SDR", "WDR", "MAGIC", "FQE"])},
                       "target_policy": "softmax(Q/0.35)", "value_model": "q_value_model.torchscript"}}
    history = [{"epoch": e, "train": {"loss": 2.0 / e, "cpe_reward_loss": 0.5 / e}, "eval": {"td_loss": 1.5 / e},
                "cpe": {"DR": {"normalized": 0.8 + 0.02 * e}, "WDR": {"normalized": 0.7 + 0.03 * e}}}
               for e in range(1, 21)]
    path.write_text(render_html(metrics, history))


def render(html: Path, png: Path, browser: str) -> list[int]:
    """Screenshot ``html`` to ``png``; return the decoded widths of its images."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--disable-dev-shm-usage"]
    subprocess.run([browser, *flags, "--window-size=1400,2600", f"--screenshot={png}", html.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.html"
        probe.write_text(html.read_text().replace("</body>", PROBE))
        dom = subprocess.run([browser, *flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                             check=True, capture_output=True, text=True, timeout=120).stdout
    found = re.search(r"id=\"image-probe\">IMAGES ([0-9,]*)<", dom)
    if not found:
        raise RuntimeError("the probe did not run; Chromium's DOM dump:\n" + dom[:2000])
    return [int(w) for w in found.group(1).split(",") if w]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--html", help="report.html to render (default: a demo report)")
    parser.add_argument("--png", required=True, help="where to write the screenshot")
    args = parser.parse_args()
    browser = chromium()
    if browser is None:
        print("chromium not found: apt-get install -y chromium", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(args.html) if args.html else Path(tmp) / "report.html"
        if not args.html:
            demo_report(html)
        widths = render(html, Path(args.png), browser)
    print(f"screenshot: {args.png}; images decoded (natural widths): {widths}")
    if not widths or min(widths) == 0:
        print("some plots did not render", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
