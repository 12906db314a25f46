"""The benchmark summary: generated from the committed results, and carried by the docs.

Timings are never asserted here (they live in ``bench/``); these tests only keep the published
table honest: ``summary.md`` is what the committed JSON files say, and README.md and
docs/benchmarks.md show that same table rather than an older one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.summary import HEADER, table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def _rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ")]


def test_summary_md_is_what_the_committed_results_say() -> None:
    assert table(RESULTS) == (RESULTS / "summary.md").read_text()


def test_readme_and_the_benchmarks_guide_carry_the_current_table() -> None:
    current = table(RESULTS).strip()
    for doc in (ROOT / "README.md", ROOT / "docs" / "benchmarks.md"):
        assert current in doc.read_text(), f"{doc.name} shows another table than bench/results"


def test_each_benchmark_adds_its_rows_and_a_missing_one_is_left_out(tmp_path: Path) -> None:
    shutil.copy(RESULTS / "enqueue.json", tmp_path)
    only_enqueue = table(tmp_path)
    rows = _rows(only_enqueue)
    assert rows[:2] == HEADER.splitlines() and len(rows) == 3 and "Enqueue cost" in rows[2]
    assert "enqueue " in only_enqueue.splitlines()[-1]  # the load it ran under
    assert table(tmp_path / "empty-dir-that-is-not-there") == HEADER + "\n"
