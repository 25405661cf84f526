"""Reports: the text CPE table, report.md and the self-contained report.html with its plots."""

from __future__ import annotations

import base64
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from batchrl.evaluation import report

ESTIMATE = {"raw": 0.8, "normalized": 1.1, "ci_low": 0.7, "ci_high": 0.9, "normalized_ci_low": 0.95,
            "normalized_ci_high": 1.2, "std_error": 0.05, "units": 100.0}
METRICS = {
    "model": "/m", "eval": "/e", "gamma": 0.99, "seed": 1, "bootstrap": 200, "notes": ["a note <b>"],
    "passing_score_bar": 120.0, "passed": True,
    "gym": {"env": "CartPole-v0", "episodes": 4, "mean_return": 150.0, "std_return": 20.0, "ci_low": 140.0,
            "ci_high": 160.0, "min_return": 120.0, "max_return": 180.0, "mean_discounted_return": 70.0,
            "returns": [120.0, 140.0, 160.0, 180.0]},
    "cpe": {"estimates": {"IPS": ESTIMATE, "DR": {**ESTIMATE, "ci_low": None, "ci_high": None,
                                                  "normalized_ci_low": None, "normalized_ci_high": None},
                          "WDR": {**ESTIMATE, "raw": 40.0}},
            "target_policy": "greedy", "reward_model": "reward_model.torchscript", "value_model": "FQE",
            "logging_policy": {"mean_logged_reward": 1.0, "mean_discounted_logged_return": 30.0, "rows": 100,
                               "episodes": 10}},
}
HISTORY = [{"epoch": e, "train": {"loss": 1.0 / e, "steps": 10}, "eval": {"td_loss": 2.0 / e},
            "cpe": {"DR": {"normalized": 0.9 + e / 10}, "MAGIC": {"normalized": None}}} for e in (1, 2, 3)]


@pytest.fixture(scope="module")
def page() -> str:
    return report.render_html(METRICS, HISTORY)


def _pngs(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)]


def test_markdown_has_verdict_tables_settings_and_notes():
    md = report.render_markdown(METRICS)
    assert "**PASSED: mean return 150 vs bar 120**" in md
    assert "| CartPole-v0 | 4 | 150 | 20 | [140, 160] | 120 | 180 | 70 |" in md
    assert "| IPS | one-step | 0.8 | [0.7, 0.9] | 1.1 | [0.95, 1.2] |" in md
    assert "| DR | one-step | 0.8 | n/a | 1.1 | n/a |" in md
    assert "| WDR | sequential | 40 |" in md
    assert "| value model | FQE |" in md and "- a note <b>" in md


def test_html_embeds_three_png_plots_and_escapes_text(page):
    images = _pngs(page)
    assert len(images) == 3 and all(img.startswith(b"\x89PNG") for img in images)
    assert "a note &lt;b&gt;" in page and "a note <b>" not in page
    assert re.search(r"(src|href)=['\"]https?://", page) is None
    assert "class='passed'" in page


def test_html_without_history_or_gym_says_so():
    metrics = {k: v for k, v in METRICS.items() if k not in ("gym", "passed", "passing_score_bar")}
    page = report.render_html(metrics, [])
    assert len(_pngs(page)) == 1
    assert "No data for: training curves" in page


def test_training_curves_skip_bookkeeping_and_missing_values():
    assert report.training_curves_png([]) is None
    assert report._float(None) != report._float(None) and math.isnan(report._float("x"))


def test_format_cpe_table_aligns_columns():
    lines = report.format_cpe_table(METRICS).splitlines()
    assert len(lines) == 5 and lines[1].startswith("---")
    assert {line.index("sequential" if "WDR" in line else "one-step") for line in lines[2:]} == {
        lines[0].index("kind")}
    assert [line.split()[0] for line in lines[2:]] == ["IPS", "DR", "WDR"]


@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
                    reason="chromium is not installed (apt-get install -y chromium); the screenshot check "
                           "renders report.html headless and looks at the pixels")
def test_report_html_renders_in_headless_chromium(tmp_path, page):
    html = tmp_path / "report.html"
    html.write_text(page)
    shot = tmp_path / "report.png"
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "report_screenshot.py"
    # exits 1 unless every embedded plot decoded in the browser
    subprocess.run([sys.executable, str(script), "--html", str(html), "--png", str(shot)], check=True,
                   timeout=180)
    assert shot.stat().st_size > 20_000  # a rendered page with plots, not a blank one


def test_reports_show_trust_the_recommendation_and_every_warning_in_plain_language():
    flagged = {**ESTIMATE, "diagnostics": {"effective_sample_size": 3.2, "trusted": False,
                                           "flags": ["few_effective_samples"]},
               "warnings": ["the importance weights leave about 3.2 effective episodes of 100 <here>"]}
    trusted = {**ESTIMATE, "diagnostics": {"effective_sample_size": 87.0, "trusted": True, "flags": []},
               "warnings": []}
    metrics = {**METRICS, "cpe": {**METRICS["cpe"], "estimates": {"SDR": trusted, "WDR": flagged},
                                  "skipped": {"Switch": "needs the logging policy's probability of every action"},
                                  "recommended": {"estimator": "SDR", "reason": "multi-step logs"}}}
    md = report.render_markdown(metrics)
    assert "| WDR | sequential | 0.8 | [0.7, 0.9] | 1.1 | [0.95, 1.2] | 3.2 | NO: few_effective_samples |" in md
    assert "| SDR | sequential | 0.8 | [0.7, 0.9] | 1.1 | [0.95, 1.2] | 87 | yes |" in md
    assert "**Act on SDR: normalized 1.1 [0.95, 1.2] (multi-step logs).**" in md
    assert "- WDR: the importance weights leave about 3.2 effective episodes" in md
    assert "- Switch skipped: needs the logging policy's probability of every action" in md
    none = {**metrics, "cpe": {**metrics["cpe"], "recommended": {
        "estimator": None, "reason": "none of WDR, SDR can be trusted", "refusals": {"WDR": "few samples"}}}}
    page = report.render_html(none, [])
    assert "Do not act on these estimates: none of WDR, SDR can be trusted. WDR: few samples" in page
    assert "class='failed'" in page and "episodes of 100 &lt;here&gt;" in page
