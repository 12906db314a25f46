"""The Django tests again under Django 4.2 LTS, the oldest release ``cioguard[django]`` accepts.

``make install`` gives the newest Django (5.x). Here Django 4.2 is installed from the package index
into a folder of its own (kept under ``.venv/`` between runs) and put first on ``PYTHONPATH`` of a
pytest subprocess that runs ``tests/contrib/test_django.py`` unchanged: the same real project, the
same private Redis, the same assertions.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("django")

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(sys.prefix) / "django42"
SPEC = "django>=4.2,<5"


def _installed() -> Path:
    """Django 4.2 in ``TARGET`` (installed once; later runs reuse it)."""
    marker = TARGET / ".installed"
    if not marker.exists():
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--upgrade",
             "--target", str(TARGET), SPEC, "asgiref>=3.6", "sqlparse>=0.3.1"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.fail(f"could not install {SPEC} from the package index: {done.stderr[-500:]}")
        marker.touch()
    return TARGET


def test_the_django_suite_passes_on_django_4_2() -> None:
    target = _installed()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target), str(ROOT)])
    version = subprocess.run(
        [sys.executable, "-c", "import django; print(django.get_version())"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert version.startswith("4.2"), version
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/contrib/test_django.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "skipped" not in run.stdout.splitlines()[-1], run.stdout
