"""``camaudit demo``: prepare (or reuse) the synthetic posters and models, audit both models."""

from __future__ import annotations

import time
from pathlib import Path

from auditors.config import config_from_dict

__all__ = ["run_demo"]


def run_demo(
    out_dir: Path, progress: bool = True, demo_dir: Path | None = None, cache_dir: Path | None = None
) -> list:
    """Audit the demo's shortcut and control models; return their AuditResults (shortcut first).

    ``demo_dir``: where the posters and checkpoints live (default: the user cache dir).
    ``cache_dir``: the audits' text-region and chunk cache (default: the user cache dir).
    """
    from auditors.demo.assets import demo_config, prepare_demo
    from flows.audit import run_audit

    t0 = time.perf_counter()
    assets = prepare_demo(demo_dir)
    if progress:
        print(f"[camaudit] demo data and models ready in {time.perf_counter() - t0:.1f}s: CAMAUDIT_DEMO_DIR={assets.root}", flush=True)
    results = []
    for which in ("shortcut", "control"):
        data = demo_config(assets, which, Path(out_dir))
        if cache_dir is not None:
            data.setdefault("output", {})["cache_dir"] = str(cache_dir)
        results.append(run_audit(config_from_dict(data, source=f"demo-{which}"), progress=progress))
    if progress:
        print(f"[camaudit] demo finished in {time.perf_counter() - t0:.1f}s", flush=True)
    return results
