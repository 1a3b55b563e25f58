"""Run every benchmark module, then write bench/results/<module>.json and a PNG chart of figure vs baseline.

Each module exposes ``main()`` (sync or async) returning a dict. Figures that compare against a baseline are
listed under ``"figures"`` as ``{"name", "value", "unit", "baseline_name", "baseline", "ratio", "target"}``;
anything else in the dict is stored as is.

    python -m bench                 # all modules
    python -m bench plumbing dunning
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MODULES = ("plumbing", "web", "invoice", "payment", "dunning", "notify", "system")
RESULTS = Path(__file__).resolve().parent / "results"


def _run(name: str) -> dict[str, Any]:
    module = importlib.import_module(f"bench.{name}")
    started = time.perf_counter()
    result = module.main()
    if inspect.isawaitable(result):
        if getattr(
            module, "UVLOOP", False
        ):  # a load generator: its own CPU competes with the system measured
            from ar_events.loop import run

            result = run(result)  # type: ignore[arg-type]
        else:
            result = asyncio.run(result)  # type: ignore[arg-type]
    return {"module": name, "seconds": round(time.perf_counter() - started, 1), **(result or {})}


def _chart(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Throughput-style figures only (a share of a baseline); latencies (lower_is_better) stay in the JSON.
    rows = [
        (r["module"], f)
        for r in results
        for f in r.get("figures", [])
        if f.get("baseline") and not f.get("lower_is_better")
    ]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(rows) + 1.5))
    labels = [f"{m}: {f['name']}" for m, f in rows]
    ratios = [100.0 * float(f["value"]) / float(f["baseline"]) for _, f in rows]
    targets = [100.0 * float(f.get("target") or 0) for _, f in rows]
    bars = ax.barh(
        labels,
        ratios,
        color=["#2a9d8f" if r >= t else "#e76f51" for r, t in zip(ratios, targets, strict=True)],
    )
    for bar, (_, f), ratio in zip(bars, rows, ratios, strict=True):
        ax.text(
            bar.get_width() + 1,
            bar.get_y() + bar.get_height() / 2,
            f"{ratio:.0f}%  ({f['value']:,.0f} vs {f['baseline']:,.0f} {f.get('unit', '')})",
            va="center",
            fontsize=8,
        )
    for y, target in enumerate(targets):
        if target:
            ax.plot([target, target], [y - 0.4, y + 0.4], color="black", linewidth=1)
    ax.set_xlabel("% of baseline measured in the same run (black tick: target)")
    ax.invert_yaxis()
    ax.set_xlim(0, max([*ratios, *targets, 100]) * 1.35)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str]) -> int:
    names = argv or list(MODULES)
    RESULTS.mkdir(exist_ok=True)
    results, failed = [], []
    for name in names:
        print(f"\n=== bench.{name} ===", flush=True)
        try:
            result = _run(name)
        except ModuleNotFoundError as exc:
            if exc.name == f"bench.{name}":
                print(f"(no bench.{name} module yet)")
                continue
            raise
        except Exception:
            traceback.print_exc()
            failed.append(name)
            continue
        result["machine"] = {"python": platform.python_version(), "cpus": __import__("os").cpu_count()}
        result["at"] = datetime.now(UTC).isoformat()
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        results.append(result)
    # The chart shows the latest result of every module, not only the ones run this time.
    latest = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    _chart(
        sorted(latest, key=lambda r: MODULES.index(r["module"]) if r["module"] in MODULES else 99),
        RESULTS / "summary.png",
    )
    print("\n=== summary (figure / baseline, same run) ===")
    for r in results:
        for f in r.get("figures", []):
            base = f.get("baseline")
            ratio = f"{100 * f['value'] / base:.0f}%" if base else "-"
            target = f" (target {100 * f['target']:.0f}%)" if f.get("target") else ""
            print(
                f"{r['module']:>9}  {f['name']:<48} {f['value']:>12,.1f} {f.get('unit', ''):<10}"
                f" vs {f.get('baseline_name', '-')}: {base or 0:,.1f} -> {ratio}{target}"
            )
    print(f"\nresults in {RESULTS}/")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
