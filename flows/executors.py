"""Where chunk tasks run: local threads, or Dask workers through prefect-dask (``run.executor``).

Chosen inside the flow from the config (not on the flow object), so a ``camaudit run``, a served
deployment and a Python call all honour ``run.executor`` the same way.

Dask workers get paths, settings and keys through the task graph; each worker process loads the
model and the OCR detector once (process-wide caches in :mod:`auditors.models.engines` and
:mod:`auditors.regions.text`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from auditors.config.schema import AuditConfig

__all__ = ["chunk_runner", "in_flight"]


def _api_url() -> str | None:
    """The Prefect API this process talks to, including a temporary (ephemeral) server's."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if url:
        return url
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    return server.api_url if getattr(server, "server_process", None) is not None else None


@contextlib.contextmanager
def _workers_share_api() -> Iterator[None]:
    """Local worker processes inherit PREFECT_API_URL, so they report to this run's server
    instead of each starting its own temporary one (seconds and ~200 MB per worker)."""
    url = _api_url()
    old = os.environ.get("PREFECT_API_URL")
    if url and not old:
        os.environ["PREFECT_API_URL"] = url
    try:
        yield
    finally:
        if url and not old:
            os.environ.pop("PREFECT_API_URL", None)


def _dask_runner(cfg: AuditConfig) -> TaskRunner:
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:  # pragma: no cover - prefect-dask is a dependency
        from auditors.errors import ConfigError

        raise ConfigError("run.executor: dask needs the prefect-dask package (pip install prefect-dask)") from None
    if cfg.run.dask_address:
        return DaskTaskRunner(address=cfg.run.dask_address)
    n = cfg.run.dask_workers or 1
    # One thread per worker process: the model's intra-op threads are the parallelism inside a worker.
    return DaskTaskRunner(cluster_kwargs={"n_workers": n, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": None})


@contextlib.contextmanager
def chunk_runner(cfg: AuditConfig) -> Iterator[TaskRunner]:
    """A started task runner for the chunk tasks of one run (closed, cluster and all, on exit)."""
    if cfg.run.executor == "dask":
        with _workers_share_api(), _dask_runner(cfg) as runner:
            yield runner
    else:
        with ThreadPoolTaskRunner(max_workers=cfg.run.workers) as runner:
            yield runner


def in_flight(cfg: AuditConfig, runner: Any) -> int:
    """Chunk results alive at once beyond the one being collected: enough to keep every worker
    busy, few enough that memory stays bounded whatever the dataset's size."""
    if cfg.run.executor != "dask":
        return cfg.run.workers
    try:
        n = sum(runner.client.nthreads().values())
    except Exception:
        n = cfg.run.dask_workers or cfg.run.workers
    return max(2 * n, 1)
