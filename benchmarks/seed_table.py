"""Per-seed results of the offline benchmarks -> a summary per config and a Markdown table."""

from __future__ import annotations

import numpy as np


def seed_report(results: dict[str, list[dict]], bar: float, median_of: str) -> dict[str, dict]:
    """Per config: the mean return of each seed, how many reach ``bar``, and the median of ``median_of``."""
    report = {}
    for name, rows in results.items():
        means = [r["mean_return"] for r in rows]
        report[name] = {"mean_returns": means, "seeds_at_or_above_bar": sum(m >= bar for m in means),
                        "seeds": len(means), f"median_{median_of}": float(np.median([r[median_of] for r in rows]))}
    return report


def print_seed_table(report: dict[str, dict], seeds: list[int], bar: float, median_of: str, header: str,
                     label: str = "config") -> None:
    """| config | seed ... | seeds >= bar | median of ``median_of`` (titled ``header``) |"""
    print(f"\n| {label} | " + " | ".join(f"seed {s}" for s in seeds) + f" | seeds >= {bar:g} | {header} |")
    print("|---|" + "---|" * (len(seeds) + 2))
    for name, summary in report.items():
        cells = " | ".join(f"{m:.1f}" for m in summary["mean_returns"])
        print(f"| {name} | {cells} | {summary['seeds_at_or_above_bar']}/{summary['seeds']} | "
              f"{summary[f'median_{median_of}']:,.0f} |")
