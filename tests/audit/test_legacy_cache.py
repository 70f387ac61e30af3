"""The old pickled chunk cache (<cache_dir>/prefect-results) is removed by a run, once, and only
when it is what older versions wrote: Prefect result records, made here by a real Prefect task
persisted exactly the way those versions did (``result_storage=cache_dir / "prefect-results"``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditors.audit.legacy_cache import remove_legacy_results
from flows.audit import run_audit
from tests.conftest import tiny_audit_config

pytestmark = pytest.mark.usefixtures("prefect_server")

REMOVED = "removed the old camaudit chunk cache"
KEPT = "left the old camaudit chunk cache"


def _old_chunk_cache(cache_dir: Path, n: int = 3) -> Path:
    """Persist ``n`` chunk-like results with Prefect, as camaudit <= 0.x did."""
    from prefect import flow, task

    folder = cache_dir / "prefect-results"

    @task(persist_result=True, cache_key_fn=lambda ctx, params: f"chunk-{params['i']}-{folder.stat().st_ino if folder.exists() else 0}")
    def chunk(i: int) -> dict:
        return {"rows": list(range(i * 10, i * 10 + 10))}

    @flow
    def old_audit() -> list[dict]:
        persisted = chunk.with_options(result_storage=folder)
        return [persisted(i) for i in range(n)]

    old_audit()
    assert len(list(folder.iterdir())) == n
    return folder


def test_a_run_removes_the_old_prefect_results_folder_once_and_says_so(poster_folder, tmp_path, caplog):
    cfg = tiny_audit_config(poster_folder, tmp_path, {"regions": {"text": {"enabled": False}}}, name="legacy")
    folder = _old_chunk_cache(Path(cfg.output.cache_dir))
    said = lambda text: [r for r in caplog.records if text in r.getMessage()]  # noqa: E731
    caplog.clear()
    run_audit(cfg)
    assert not folder.exists()
    (line,) = said(REMOVED)  # once, in the flow run's log
    assert line.name == "prefect.flow_runs" and "3 Prefect result files" in line.getMessage()
    assert (Path(cfg.output.cache_dir) / "results.sqlite").is_file(), "the cache dir itself stays"
    caplog.clear()
    run_audit(cfg)
    assert not said(REMOVED) and not said(KEPT)


def test_a_folder_that_is_not_only_prefect_results_is_left_alone(tmp_path):
    folder = _old_chunk_cache(tmp_path / "cache")
    mine = folder / "notes.txt"
    mine.write_text("my own file")
    done = remove_legacy_results(tmp_path / "cache")
    assert done is not None and done.removed == 0 and "notes.txt is not a Prefect result record" in done.message()
    assert mine.read_text() == "my own file" and len(list(folder.iterdir())) == 4, "nothing removed"
    mine.unlink()
    (folder / "sub").mkdir()
    done = remove_legacy_results(tmp_path / "cache")
    assert done.kept_because == "sub is not a regular file" and folder.is_dir()
    (folder / "sub").rmdir()
    # a record-shaped file whose storage key names another file is not one of this folder's records
    other = folder / "copied"
    other.write_bytes((folder / sorted(p.name for p in folder.iterdir())[0]).read_bytes())
    done = remove_legacy_results(tmp_path / "cache")
    assert done.kept_because == "copied is not a Prefect result record"
    other.unlink()
    done = remove_legacy_results(tmp_path / "cache")
    assert done.removed == 3 and done.bytes > 0 and not folder.exists()
    assert remove_legacy_results(tmp_path / "cache") is None


def test_a_link_named_prefect_results_is_not_followed(tmp_path):
    elsewhere = _old_chunk_cache(tmp_path / "elsewhere")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "prefect-results").symlink_to(elsewhere, target_is_directory=True)
    done = remove_legacy_results(cache)
    assert done is not None and "not a folder" in done.kept_because
    assert (cache / "prefect-results").is_symlink() and len(list(elsewhere.iterdir())) == 3
