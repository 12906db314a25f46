"""The table of the latest figures, from the JSON files in the results directory.

``python -m bench.summary`` prints it as Markdown and writes ``summary.md`` beside the JSON
files; docs/benchmarks.md and the README carry a copy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.common import results_dir

HEADER = (
    "| Benchmark | cioguard | Baseline | Ratio | Target | Met |\n"
    "| --- | --- | --- | --- | --- | --- |"
)


def _load(directory: Path, name: str) -> dict[str, Any] | None:
    path = directory / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _yes(met: bool) -> str:
    return "yes" if met else "**no**"


def rate_rows(d: dict[str, Any]) -> list[str]:
    r = d["setup"]["rate_per_s"]
    ours, celery, seed = d["cioguard"], d["celery rate_limit"], d["seed loop"]
    met = ours["over_limit"] == 0 and 0.95 <= ours["achieved_over_r"] <= 1.05
    return [
        f"| Rate fidelity at R = {r}/s, 2 nodes x 2 processes (achieved / R; requests past the "
        f"limit) | {ours['achieved_over_r']:.2f} R; {ours['over_limit']} past (busiest 1 s: "
        f'{ours["max_requests_in_any_1s_window"]}) | Celery `rate_limit="{r}/s"`: '
        f"{celery['achieved_over_r']:.2f} R on average (busiest 1 s: "
        f"{celery['max_requests_in_any_1s_window']}); seed loop: {seed['achieved_over_r']:.2f} R "
        f"| {ours['achieved_over_r']:.2f} / {celery['achieved_over_r']:.2f} / "
        f"{seed['achieved_over_r']:.2f} | ~1.0 R, 0 past | {_yes(met)} |"
    ]


def pipeline_rows(d: dict[str, Any]) -> list[str]:
    runs = d["runs"]
    rows = []
    for mode, what in (("e2e", "end to end"), ("drain", "workers only")):
        ours, bare = runs[f"cioguard {mode}"], runs[f"bare celery {mode}"]
        ratio = d[f"ratio_{mode}"]
        rows.append(
            f"| Pipeline overhead, unbatched (`CIOGUARD_BATCH=0`), unlimited rate, {what} "
            f"(jobs/s) | {ours['jobs_per_s']:.0f} "
            f"| bare Celery task, same HTTPS call: {bare['jobs_per_s']:.0f} | {ratio:.2f} "
            f"| >= {d['target']} | {_yes(ratio >= d['target'])} |"
        )
        batched = runs.get(f"cioguard batched {mode}")
        if batched is not None:
            ratio_b = d[f"ratio_batched_{mode}"]
            rows.append(
                f"| Pipeline, batched (the default), unlimited rate, {what} (people/s) "
                f"| {batched['jobs_per_s']:.0f} | bare Celery task, same HTTPS call: "
                f"{bare['jobs_per_s']:.0f} | {ratio_b:.2f} | >= {d['target']} "
                f"| {_yes(ratio_b >= d['target'])} |"
            )
    return rows + _postgres_rows(d)


def _postgres_rows(d: dict[str, Any]) -> list[str]:
    """The round with a PostgreSQL audit store, end to end (absent from older results)."""
    pg = d.get("postgres") or {}
    if "runs" not in pg:
        return []
    rows = []
    for system, what in (("cioguard", "unbatched"), ("cioguard batched", "batched")):
        ours, bare = pg["runs"][f"{system} e2e"], pg["runs"]["bare celery e2e"]
        ratio = pg["ratio_batched_e2e" if what == "batched" else "ratio_e2e"]
        rows.append(
            f"| Pipeline, {what}, PostgreSQL audit store, unlimited rate, end to end (jobs/s) "
            f"| {ours['jobs_per_s']:.0f} | bare Celery task, same HTTPS call: "
            f"{bare['jobs_per_s']:.0f} | {ratio:.2f} | >= {d['target']} "
            f"| {_yes(ratio >= d['target'])} |"
        )
    return rows


def batching_rows(d: dict[str, Any]) -> list[str]:
    runs = d["runs"]
    r = d["setup"]["rate_per_s"]
    return [
        f"| Batching at R = {r} requests/s (people/s) | batched: "
        f"{runs['batched']['jobs_per_s']:.0f} | unbatched: {runs['unbatched']['jobs_per_s']:.0f} "
        f"| {d['ratio']:.1f}x | >= {d['target']:.0f}x | {_yes(d['met'])} |"
    ]


def apis_rows(d: dict[str, Any]) -> list[str]:
    """Track vs Pipelines side by side (a report: the issue sets no target)."""
    r, pps, ratio = d["setup"]["rate_per_s"], d["people_per_s"], d["ratio_pipelines_over_track"]
    return [
        f"| Pipelines vs Track API at R = {r} requests/s, {mode} (people/s) | Pipelines: "
        f"{pps[f'pipelines {mode}']:.0f} | Track: {pps[f'track {mode}']:.0f} | "
        f"{ratio[mode]:.2f} | report only | — |"
        for mode in ("unbatched", "batched")
    ]


def erasure_rows(d: dict[str, Any]) -> list[str]:
    b, u = d["batched"], d["unbatched"]
    seed_s = d["seed_10k_wall_s"]
    how = "measured" if b["people"] >= 10_000 else f"scaled from {b['people']:,}"
    return [
        f"| Bulk erasure, 10,000 at R = {b['rate_per_s']}/s batched (wall / ideal) | "
        f"{d['batched_10k_wall_s']:,.1f} s ({how}) vs ideal "
        f"{d['batched_10k_ideal_s']:.0f} s | seed loop: {seed_s:,.0f} s | "
        f"{d['ratio_batched']:.2f} (seed / cioguard: "
        f"{seed_s / d['batched_10k_wall_s']:.0f}x) | <= {d['target']} | "
        f"{_yes(d['met_batched'])} |",
        *_rate_bound_row(d, seed_s),
        f"| Bulk erasure, 10,000 at R = {u['rate_per_s']}/s unbatched (wall / ideal) | "
        f"{d['unbatched_10k_wall_s']:,.0f} s (ratio of {u['people']:,}, applied) vs ideal "
        f"{10_000 / u['rate_per_s']:.0f} s | seed loop: {seed_s:,.0f} s | "
        f"{d['ratio_unbatched']:.2f} | <= {d['target']} | {_yes(d['met_unbatched'])} |",
    ]


def _rate_bound_row(d: dict[str, Any], seed_s: float) -> list[str]:
    """The batched run where the rate binds (absent from results written before it existed)."""
    r = d.get("batched_rate_bound")
    if r is None:
        return []
    scale = 10_000 / r["people"]
    return [
        f"| Bulk erasure, 10,000 at R = {r['rate_per_s']}/s batched, rate-bound (wall / ideal) | "
        f"{r['wall_s'] * scale:,.1f} s vs ideal {r['ideal_s'] * scale:.0f} s | "
        f"seed loop: {seed_s:,.0f} s | {d['ratio_batched_rate_bound']:.2f} | <= {d['target']} | "
        f"{_yes(d['met_batched_rate_bound'])} |"
    ]


def enqueue_rows(d: dict[str, Any]) -> list[str]:
    ours, bare = d["cioguard"], d["bare_send_task"]
    return [
        f"| Enqueue cost, `identify()` with 10 attributes (µs p50 / p99) | "
        f"{ours['p50_us']:.0f} / {ours['p99_us']:.0f} | bare `send_task`, same size: "
        f"{bare['p50_us']:.0f} / {bare['p99_us']:.0f} | {d['ratio_p50']:.2f} / "
        f"{d['ratio_p99']:.2f} | none | - |"
    ]


def bulk_rows(d: dict[str, Any]) -> list[str]:
    return [
        f"| Bulk enqueue, `identify_many` (people/s, batches of {d['batch']}) | "
        f"{d['identify_many_people_per_s']:,} | loop of `identify()`: "
        f"{d['identify_loop_people_per_s']:,} | {d['ratio']:.2f}x | >= {d['target']}x | "
        f"{_yes(d['met'])} |"
    ]


def audit_rows(d: dict[str, Any]) -> list[str]:
    rows = []
    for store in ("sqlite", "postgres"):
        r = d[store]
        if "skipped" in r:
            continue
        rows.append(
            f"| Audit append, {store}, batches of {d['setup']['batch']} (CPU / wall ms per "
            f"1,000 rows) | {r['cpu_ms_per_1000_rows']} / {r['wall_ms_per_1000_rows']} | none "
            "| - | none | - |"
        )
    return rows


def floor_rows(d: dict[str, Any]) -> list[str]:
    """cioguard's batched drain and the other systems against the tuned floor."""
    t = d["table"]
    floor = t["tuned floor"]
    rows = []
    for system, label in (("cioguard sqlite", "SQLite"), ("cioguard postgres", "PostgreSQL")):
        if system not in t:
            continue
        r = t[system]
        target = f">= {d['target']}" if system == "cioguard sqlite" else "none"
        met = _yes(d["met"]) if system == "cioguard sqlite" else "-"
        rows.append(
            f"| Drain vs the tuned floor, batched, audit on {label} (people/s; worker CPU ms per "
            f"1,000) | {r['people_per_s']:,.0f}; {r['worker_cpu_ms_per_1000']} | tuned floor "
            f"(celery-batches on cioguard's transport, only the v2 POST): "
            f"{floor['people_per_s']:,.0f}; {floor['worker_cpu_ms_per_1000']} | "
            f"{r['people_per_s_vs_tuned_floor']:.2f}; CPU {r['worker_cpu_vs_tuned_floor']:.2f}x "
            f"| {target} | {met} |"
        )
    stock = t["stock floor"]
    rows.append(
        f"| Stock floor: the same bare task on kombu's Redis transport (people/s; worker CPU ms "
        f"per 1,000) | - | {stock['people_per_s']:,.0f}; {stock['worker_cpu_ms_per_1000']} | "
        f"{stock['people_per_s_vs_tuned_floor']:.2f}; CPU {stock['worker_cpu_vs_tuned_floor']:.2f}x"
        " of the tuned floor | none | - |"
    )
    cdp = d.get("cdp_client", {})
    if "people_per_s" in cdp:
        rows.append(
            f"| Customer.io's `customerio-cdp-analytics` client, in process, end to end (people/s;"
            f" CPU ms per 1,000) | - | {cdp['people_per_s']:,.0f}; {cdp['cpu_ms_per_1000']} (keeps "
            "everything in memory: a crash loses it; no broker, no audit) | "
            f"{cdp['people_per_s'] / floor['people_per_s']:.2f} of the tuned floor | none | - |"
        )
    return rows


def scaling_rows(d: dict[str, Any]) -> list[str]:
    rows = []
    for label, by in d["people_per_s"].items():
        figures = ", ".join(f"{n}: {v:.0f}" for n, v in by.items())
        one, top = by["1"], by[max(by, key=int)]
        rows.append(
            f"| Scaling, {label}, unlimited rate (people/s by processes) | {figures} | "
            f"1 process: {one:.0f} | {top / one:.2f}x at {max(by, key=int)} | none | - |"
        )
    return rows


BUILDERS = {
    "rate_fidelity": rate_rows,
    "pipeline_overhead": pipeline_rows,
    "batching": batching_rows,
    "bulk_erasure": erasure_rows,
    "enqueue": enqueue_rows,
    "enqueue_bulk": bulk_rows,
    "floor": floor_rows,
    "audit_append": audit_rows,
    "scaling": scaling_rows,
    "apis": apis_rows,
}


def table(directory: Path | None = None) -> str:
    directory = directory or results_dir()
    rows = [HEADER]
    loads = []
    for name, build in BUILDERS.items():
        data = _load(directory, name)
        if data is None:
            continue
        rows.extend(build(data))
        loads.append(f"{name} {data['load_before'][0]}->{data['load_after'][0]}")
    found = [d for n in BUILDERS if (d := _load(directory, n)) is not None]
    footer = ""
    if found:
        machine = found[0]["machine"]
        stamps = sorted(d["machine"]["measured_at"] for d in found)
        footer = (
            f"\n\nMeasured {stamps[0]} to {stamps[-1]} on {machine['cpus']} cores, Python "
            f"{machine['python']}; 1-minute load before->after: {'; '.join(loads)}."
        )
    return "\n".join(rows) + footer + "\n"


def main() -> str:
    text = table()
    (results_dir() / "summary.md").write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
