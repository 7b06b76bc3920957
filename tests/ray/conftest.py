"""A real local Ray cluster for the Ray tests: started once (2 CPUs, and a custom
resource ``special``), its workers importing this repository's modules.

Every worker of the cluster's driver (this process) runs ``tests.ray.stages.setup_tracing``
when it starts: with ``STAGEFLOW_TEST_SPANS`` set (to :func:`worker_spans`' file) it
installs an OpenTelemetry SDK whose spans go to that file as JSON lines; without it, it
does nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPANS_ENV = "STAGEFLOW_TEST_SPANS"


@pytest.fixture(scope="session")
def worker_spans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The file the cluster's workers write the spans they end to (one JSON line each)."""
    return tmp_path_factory.mktemp("ray-spans") / "spans.jsonl"


@pytest.fixture(scope="session")
def ray_cluster(worker_spans: Path) -> Iterator[object]:
    import ray  # the dev install has the ray extra: no Ray is a failure, not a skip

    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(
        num_cpus=2,
        resources={"special": 1},
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "env_vars": {"PYTHONPATH": path, SPANS_ENV: str(worker_spans)},
            "worker_process_setup_hook": "tests.ray.stages.setup_tracing",
        },
    )
    yield ray
    ray.shutdown()
