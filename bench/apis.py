"""Track API vs Pipelines API: people per second at the same fixed request rate, side by side.

The sandbox enforces R = 50 requests/s (its strict bucket) on both APIs and cioguard's limiter
is set to R for each (``CIOGUARD_RATE_LIMIT`` / ``CIOGUARD_PIPELINES_RATE_LIMIT``). One worker
node, 2 processes, a backlog filled beforehand; timed from the workers' resume to the last final
audit row, unbatched (one person per request: both are capped at R) and batched
(``CIOGUARD_BATCH_MAX_OPS`` people per ``/api/v2/batch`` or ``/v1/batch`` request). Reported as
the ratio Pipelines / Track for each mode; the Pipelines requests are also checked against the
sandbox's copy of Customer.io's Pipelines document (``spec_violations`` must be 0).
"""

from __future__ import annotations

from typing import Any

from bench.common import Stack, recorded, say, sized
from bench.runs import RunResult, cioguard_run
from cioguard.sandbox.pipelines import DEFAULT_PIPELINES_API_KEY, PipelinesControl

NAME = "apis"
RATE_PER_S = 50
CONCURRENCY = 2
MAX_OPS = 100


def api_env(stack: Stack, api: str) -> dict[str, Any]:
    """The settings that choose ``api`` at rate R."""
    if api == "track":
        return {"CIOGUARD_RATE_LIMIT": RATE_PER_S}
    return {
        "CIOGUARD_API": "pipelines", "CIOGUARD_PIPELINES_URL": stack.sandbox.url,
        "CUSTOMERIO_PIPELINES_API_KEY": DEFAULT_PIPELINES_API_KEY,
        "CIOGUARD_PIPELINES_RATE_LIMIT": RATE_PER_S,
    }  # fmt: skip


def run(stack: Stack, api: str, *, batch: bool, jobs: int) -> RunResult:
    return cioguard_run(
        stack, jobs=jobs, mode="drain", concurrency=CONCURRENCY, batch=batch,
        faults={"strict_rate_per_s": RATE_PER_S}, CIOGUARD_BATCH_MAX_OPS=MAX_OPS,
        **api_env(stack, api),
    )  # fmt: skip


def main() -> dict[str, Any]:
    unbatched_jobs, batched_jobs = sized(500, 100), sized(5000, 400)
    with Stack() as stack, recorded(NAME) as result:
        pipelines = PipelinesControl(stack.sandbox.url, stack.sandbox.ssl_context())
        pipelines.reset()
        result["setup"] = {
            "rate_per_s": RATE_PER_S, "concurrency": CONCURRENCY, "batch_max_ops": MAX_OPS,
            "unbatched_people": unbatched_jobs, "batched_people": batched_jobs,
            "sandbox": "strict_rate_per_s=R on both APIs",
        }  # fmt: skip
        runs: dict[str, dict[str, Any]] = {}
        for mode, batch, jobs in (("unbatched", False, unbatched_jobs),
                                  ("batched", True, batched_jobs)):  # fmt: skip
            for api in ("track", "pipelines"):
                say(f"{NAME}: {api} {mode}")
                measured = run(stack, api, batch=batch, jobs=jobs)
                runs[f"{api} {mode}"] = measured.as_dict()
                say(f"{NAME}: {api} {mode}: {measured.jobs_per_s} people/s")
        result["runs"] = runs
        result["people_per_s"] = {k: v["jobs_per_s"] for k, v in runs.items()}
        result["ratio_pipelines_over_track"] = {
            mode: round(runs[f"pipelines {mode}"]["jobs_per_s"]
                        / runs[f"track {mode}"]["jobs_per_s"], 2)
            for mode in ("unbatched", "batched")
        }  # fmt: skip
        result["pipelines_sandbox"] = pipelines.stats()
        pipelines.close()
    return result


if __name__ == "__main__":
    main()
