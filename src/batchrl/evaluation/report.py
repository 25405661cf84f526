"""Evaluation reports: a text CPE table, ``report.md`` (tables) and a self-contained ``report.html``.

The HTML embeds its plots as base64 PNG images drawn with matplotlib's Agg backend (no pyplot state):
training curves from ``training_summary.json``'s ``per_epoch`` records, the CPE estimates with their
95% intervals, and the distribution of gym returns. It loads nothing from the network.
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import TYPE_CHECKING, Any

from batchrl.evaluation.cpe import ONE_STEP, SEQUENTIAL

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ORDER = (*ONE_STEP, *SEQUENTIAL)
#: Per-epoch train keys that are bookkeeping, not losses.
NOT_LOSSES = ("steps", "rows", "seconds", "transitions_per_s")


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _interval(low: Any, high: Any) -> str:
    if low is None or high is None:
        return "n/a"
    return f"[{_num(low)}, {_num(high)}]"


def _estimates(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The CPE estimates of a metrics dict, an evaluate summary, or the estimates themselves."""
    cpe = metrics.get("cpe", metrics)
    cpe = cpe.get("estimates", cpe) if isinstance(cpe, dict) else {}
    found = {name: cpe[name] for name in ORDER if isinstance(cpe.get(name), dict)}
    found.update({k: v for k, v in cpe.items() if k not in found and isinstance(v, dict) and "raw" in v})
    return found


def _trust(e: dict[str, Any]) -> str:
    info = e.get("diagnostics")
    if not isinstance(info, dict) or "trusted" not in info:
        return "n/a"
    return "yes" if info["trusted"] else "NO: " + ", ".join(info.get("flags", []))


def cpe_rows(metrics: dict[str, Any]) -> list[list[str]]:
    """Rows of the CPE table: estimator, kind, raw, 95% CI, normalized, 95% CI, effective sample size, trusted."""
    rows = []
    for name, e in _estimates(metrics).items():
        kind = "one-step" if name in ONE_STEP else "sequential"
        ess = (e.get("diagnostics") or {}).get("effective_sample_size")
        rows.append([name, kind, _num(e.get("raw")), _interval(e.get("ci_low"), e.get("ci_high")),
                     _num(e.get("normalized")), _interval(e.get("normalized_ci_low"), e.get("normalized_ci_high")),
                     _num(ess, 3), _trust(e)])
    return rows


#: What the CPE table's numbers are (the rule is :mod:`batchrl.evaluation.estimators.core`'s).
CPE_NOTE = ("Normalized = estimate / the logging policy's value on the same data (1.0 = as good as the logging "
            "policy). 95% intervals: Student-t for the plain means (DM, IPS, DR, Switch, SwitchDR, SDR, FQE; "
            "the normalized one by the delta method), percentile bootstrap for SNIPS, WDR and MAGIC.")
CPE_HEADER = ["estimator", "kind", "raw", "95% CI", "normalized", "normalized 95% CI", "effective n", "trusted"]


def recommendation(metrics: dict[str, Any]) -> str | None:
    """One sentence: which estimate to act on, or that none can be trusted and why."""
    rec = (metrics.get("cpe") or {}).get("recommended")
    if not isinstance(rec, dict):
        return None
    name = rec.get("estimator")
    if name:
        e = _estimates(metrics).get(name, {})
        return (f"Act on {name}: normalized {_num(e.get('normalized'))} "
                f"{_interval(e.get('normalized_ci_low'), e.get('normalized_ci_high'))} ({rec.get('reason')}).")
    refusals = "; ".join(f"{k}: {v}" for k, v in (rec.get("refusals") or {}).items())
    return f"Do not act on these estimates: {rec.get('reason')}. {refusals}".strip()


def warning_items(metrics: dict[str, Any]) -> list[str]:
    """Plain-language warnings of every estimate, the estimators skipped and the logging-policy model."""
    items = [f"{name}: {w}" for name, e in _estimates(metrics).items() for w in e.get("warnings") or []]
    cpe = metrics.get("cpe") or {}
    items += [f"{name} skipped: {reason}" for name, reason in (cpe.get("skipped") or {}).items()]
    return items


def format_cpe_table(metrics: dict[str, Any]) -> str:
    """The CPE estimates as an aligned text table (for terminals and logs).

    Accepts ``metrics.json``, the evaluate stage's summary, or a ``{name: estimate}`` dict.
    """
    rows = cpe_rows(metrics)
    if not rows:
        return "no CPE estimates"
    widths = [max(len(r[i]) for r in [CPE_HEADER, *rows]) for i in range(len(CPE_HEADER))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(CPE_HEADER), line(["-" * w for w in widths]), *map(line, rows)])


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(out)


def _gym_rows(gym: dict[str, Any]) -> list[list[str]]:
    return [[gym["env"], str(gym["episodes"]), _num(gym.get("mean_return")), _num(gym.get("std_return")),
             _interval(gym.get("ci_low"), gym.get("ci_high")), _num(gym.get("min_return")),
             _num(gym.get("max_return")), _num(gym.get("mean_discounted_return"))]]


GYM_HEADER = ["env", "episodes", "mean return", "std", "95% CI of mean", "min", "max", "mean discounted return"]


def _verdict(metrics: dict[str, Any]) -> str | None:
    bar, passed = metrics.get("passing_score_bar"), metrics.get("passed")
    if bar is None or passed is None:
        return None
    return f"{'PASSED' if passed else 'FAILED'}: mean return {_num(metrics['gym']['mean_return'])} vs bar {_num(bar)}"


def _setting_rows(metrics: dict[str, Any]) -> list[list[str]]:
    cpe = metrics.get("cpe") or {}
    rows = [["model", str(metrics.get("model"))], ["eval table", str(metrics.get("eval"))],
            ["gamma", _num(metrics.get("gamma"))], ["target policy", str(cpe.get("target_policy", "n/a"))],
            ["reward model", str(cpe.get("reward_model"))], ["value model", str(cpe.get("value_model"))],
            ["bootstrap replicates", str(metrics.get("bootstrap"))], ["seed", str(metrics.get("seed"))]]
    calibration = (cpe.get("logging_policy_model") or {}).get("calibration") or {}
    if calibration:
        rows += [["logging-policy model (held out): mean |mu_hat - logged propensity|",
                  _num(calibration.get("propensity_mean_abs_error"))],
                 ["logging-policy model: expected calibration error", _num(calibration.get("expected_calibration_error"))]]
    logging_values = cpe.get("logging_policy") or {}
    if logging_values:
        rows += [["mean logged reward (one-step normalizer)", _num(logging_values.get("mean_logged_reward"))],
                 ["mean discounted logged return (sequential normalizer)",
                  _num(logging_values.get("mean_discounted_logged_return"))],
                 ["eval rows / episodes", f"{logging_values.get('rows')} / {logging_values.get('episodes')}"]]
    return rows


def render_markdown(metrics: dict[str, Any]) -> str:
    """``report.md``: verdict, gym returns, CPE table, settings and notes."""
    parts = ["# Evaluation report", ""]
    verdict = _verdict(metrics)
    if verdict:
        parts += [f"**{verdict}**", ""]
    if metrics.get("gym"):
        parts += ["## Gym rollouts (greedy policy)", "", _md_table(GYM_HEADER, _gym_rows(metrics["gym"])), ""]
    if metrics.get("cpe"):
        parts += ["## Counterfactual policy evaluation", "",
                  CPE_NOTE, "",
                  _md_table(CPE_HEADER, cpe_rows(metrics)), ""]
        advice = recommendation(metrics)
        if advice:
            parts += [f"**{advice}**", ""]
        warnings = warning_items(metrics)
        if warnings:
            parts += ["### When not to trust these numbers", "", *[f"- {w}" for w in warnings], ""]
    parts += ["## Settings", "", _md_table(["setting", "value"], _setting_rows(metrics)), ""]
    if metrics.get("training"):
        rows = [[k, _num(v) if not isinstance(v, dict) else ", ".join(f"{a}={_num(b)}" for a, b in v.items())]
                for k, v in metrics["training"].items()]
        parts += ["## Training", "", _md_table(["", "value"], rows), ""]
    if metrics.get("notes"):
        parts += ["## Notes", "", *[f"- {note}" for note in metrics["notes"]], ""]
    return "\n".join(parts)


# ---------------------------------------------------------------- plots


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def training_curves_png(history: list[dict[str, Any]]) -> str | None:
    """Train losses, eval metrics and normalized CPE per epoch (None without history)."""
    epochs = [r.get("epoch", i + 1) for i, r in enumerate(history)]
    panels = []
    for title, section in (("train metrics", "train"), ("eval metrics", "eval")):
        series = {}
        for key in sorted({k for r in history for k in (r.get(section) or {})} - set(NOT_LOSSES)):
            series[key] = [_float((r.get(section) or {}).get(key)) for r in history]
        if series:
            panels.append((title, series))
    cpe_series = {}
    for name in ORDER:
        values = [_float(((r.get("cpe") or {}).get(name) or {}).get("normalized")) for r in history]
        if any(math.isfinite(v) for v in values):
            cpe_series[name] = values
    if cpe_series:
        panels.append(("CPE (normalized)", cpe_series))
    if not panels:
        return None
    figure = _figure(5 * len(panels), 3.6)
    for i, (title, series) in enumerate(panels):
        ax = figure.add_subplot(1, len(panels), i + 1)
        for label, values in series.items():
            ax.plot(epochs, values, marker="o", markersize=3, label=label)
        positive = all(v > 0 for vs in series.values() for v in vs if math.isfinite(v))
        if title != "CPE (normalized)" and positive:
            ax.set_yscale("log")
        if title == "CPE (normalized)":
            ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return _png(figure)


def _float(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and value is not None else float("nan")


def cpe_png(estimates: dict[str, dict[str, Any]]) -> str | None:
    """Normalized estimates with their 95% intervals (one-step and sequential panels)."""
    groups = [(title, [n for n in estimates if (n in ONE_STEP) == one]) for title, one in
              (("one-step (normalized by mean logged reward)", True),
               ("sequential (normalized by mean discounted logged return)", False))]
    groups = [(t, names) for t, names in groups if names]
    if not groups:
        return None
    figure = _figure(6 * len(groups), 0.5 * max(len(n) for _, n in groups) + 1.6)
    for i, (title, names) in enumerate(groups):
        ax = figure.add_subplot(1, len(groups), i + 1)
        for y, name in enumerate(names):
            e = estimates[name]
            value = _float(e.get("normalized"))
            low, high = _float(e.get("normalized_ci_low")), _float(e.get("normalized_ci_high"))
            if math.isfinite(low) and math.isfinite(high):
                ax.errorbar([value], [y], xerr=[[max(value - low, 0)], [max(high - value, 0)]], fmt="o",
                            capsize=4, color="tab:blue")
            else:
                ax.plot([value], [y], "o", color="tab:blue")
        ax.axvline(1.0, color="grey", linestyle="--", linewidth=1, label="logging policy")
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("estimate / logging policy value (95% CI)")
        ax.grid(alpha=0.3, axis="x")
    return _png(figure)


def returns_png(gym: dict[str, Any], bar: float | None) -> str | None:
    """Histogram of the episode returns with the mean and the passing bar."""
    returns = [v for v in gym.get("returns") or [] if v is not None]
    if not returns:
        return None
    figure = _figure(6, 3.6)
    ax = figure.add_subplot(1, 1, 1)
    ax.hist(returns, bins=min(30, max(5, len(set(returns)))), color="tab:green", alpha=0.8)
    ax.axvline(gym["mean_return"], color="black", linewidth=1.5, label=f"mean {gym['mean_return']:.4g}")
    if bar is not None:
        ax.axvline(bar, color="tab:red", linestyle="--", linewidth=1.5, label=f"passing bar {bar:g}")
    ax.set_title(f"{gym['env']}: returns of {len(returns)} greedy episodes")
    ax.set_xlabel("episode return")
    ax.set_ylabel("episodes")
    ax.legend(fontsize=8)
    return _png(figure)


# ---------------------------------------------------------------- HTML


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(png: str | None, alt: str) -> str:
    if png is None:
        return f"<p class='note'>No data for: {html.escape(alt)}.</p>"
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{png}'>"


STYLE = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: left; font-size: 14px; }
th { background: #f3f3f3; }
.passed { color: #1a7f37; font-weight: bold; } .failed { color: #c62828; font-weight: bold; }
.note { color: #666; } img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; }
"""


def render_html(metrics: dict[str, Any], history: list[dict[str, Any]]) -> str:
    """``report.html``: the markdown report's tables plus plots, in one file with no external references."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>batchrl evaluation</title>"
             f"<style>{STYLE}</style></head><body><h1>Evaluation report</h1>"]
    verdict = _verdict(metrics)
    if verdict:
        parts.append(f"<p class='{'passed' if metrics['passed'] else 'failed'}'>{html.escape(verdict)}</p>")
    if metrics.get("gym"):
        parts += ["<h2>Gym rollouts (greedy policy)</h2>", _html_table(GYM_HEADER, _gym_rows(metrics["gym"])),
                  _img(returns_png(metrics["gym"], metrics.get("passing_score_bar")), "return distribution")]
    if metrics.get("cpe"):
        parts += ["<h2>Counterfactual policy evaluation</h2>",
                  f"<p>{html.escape(CPE_NOTE)}</p>",
                  _html_table(CPE_HEADER, cpe_rows(metrics))]
        advice = recommendation(metrics)
        if advice:
            trusted = bool(((metrics.get("cpe") or {}).get("recommended") or {}).get("estimator"))
            parts.append(f"<p class='{'passed' if trusted else 'failed'}'>{html.escape(advice)}</p>")
        warnings = warning_items(metrics)
        if warnings:
            parts += ["<h3>When not to trust these numbers</h3><ul class='warnings'>",
                      *[f"<li>{html.escape(w)}</li>" for w in warnings], "</ul>"]
        parts.append(_img(cpe_png(_estimates(metrics)), "CPE estimates with 95% intervals"))
    parts += ["<h2>Training curves</h2>", _img(training_curves_png(history), "training curves"),
              "<h2>Settings</h2>", _html_table(["setting", "value"], _setting_rows(metrics))]
    if metrics.get("notes"):
        parts += ["<h2>Notes</h2><ul>", *[f"<li>{html.escape(n)}</li>" for n in metrics["notes"]], "</ul>"]
    parts.append("</body></html>")
    return "\n".join(parts)
