"""One CAM engine shared by threads (run.workers > 1), and CUDA out-of-memory backoff (run on CPU
by a real model that raises torch.cuda.OutOfMemoryError above a batch size)."""

from __future__ import annotations

import threading

import pandas as pd
import pytest
import torch

from auditors.audit.oom import compute_with_backoff
from auditors.cam import CamEngine
from auditors.config import config_from_dict
from flows.audit import run_audit
from tests.conftest import TinyCNN, build_tiny_cnn


class OomAboveTwo(TinyCNN):
    """TinyCNN that behaves like a GPU that fits 2 images: larger batches raise OOM."""

    def forward(self, x):
        if x.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (simulated for a batch of {x.shape[0]})")
        return super().forward(x)


def build_oom_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return OomAboveTwo(3)


@pytest.mark.parametrize("gradient", ["autograd", "auto"])
def test_threads_sharing_one_engine_get_their_own_maps(gradient, one_torch_thread):
    model = build_tiny_cnn().eval()
    engine = CamEngine(model, target_layer="features.4", input_size=(32, 32), gradient=gradient)
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(2, 3, 32, 32, generator=gen) for _ in range(8)]
    expected = [engine.compute(x).maps for x in inputs]
    results: dict[tuple[int, int], torch.Tensor] = {}
    failures: list[BaseException] = []
    start = threading.Barrier(4)

    def work(t: int) -> None:
        start.wait()
        try:
            for rep in range(10):
                for i, x in enumerate(inputs):
                    results[(t, rep * 100 + i)] = engine.compute(x).maps
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not failures, failures[0]
    assert len(results) == 4 * 10 * len(inputs)
    for (_, k), maps in results.items():
        torch.testing.assert_close(maps, expected[k % 100], rtol=0, atol=0)


def test_oom_backoff_halves_the_batch_and_gives_the_same_maps(one_torch_thread):
    torch.manual_seed(0)
    ok = TinyCNN(3).eval()
    oom = OomAboveTwo(3).eval()
    oom.load_state_dict(ok.state_dict())
    x = torch.randn(7, 3, 32, 32)
    want = CamEngine(ok, target_layer="features.4", input_size=(32, 32)).compute(x)
    stats: dict[str, int] = {}
    got = compute_with_backoff(CamEngine(oom, target_layer="features.4", input_size=(32, 32)), x, None, stats)
    torch.testing.assert_close(got.maps, want.maps)
    torch.testing.assert_close(got.logits, want.logits)
    assert stats["oom_splits"] == 3, "7 -> 3+4 -> (1+2)+(2+2)"
    one = OomAboveTwo(3).eval()
    with pytest.raises(torch.cuda.OutOfMemoryError):  # a batch of one that fails is a real error
        compute_with_backoff(CamEngine(_AlwaysOom(one).eval(), target_layer="inner.features.4", input_size=(32, 32), gradient="autograd"),
                             x[:1], None, {})


class _AlwaysOom(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")


def _config(root, tmp_path, name, **over):
    ckpt = tmp_path / "tiny.pt"
    torch.save(build_tiny_cnn().state_dict(), ckpt)
    data = {
        "name": name,
        "dataset": {"root": str(root)},
        "model": {"factory": "tests.conftest:build_tiny_cnn", "checkpoint": str(ckpt), "input_size": [64, 64]},
        "cam": {"batch_size": 6},
        "output": {"dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / f"cache-{name}"), "gallery_size": 0},
        "run": {"chunk_size": 3},
        "sanity": {"enabled": False},
        "tokens": {"enabled": False},
    }
    for k, v in over.items():
        data[k] = {**data.get(k, {}), **v}
    return config_from_dict(data)


@pytest.mark.usefixtures("prefect_server")
def test_two_workers_and_oom_backoff_give_the_single_worker_rows(poster_folder, tmp_path):
    base = run_audit(_config(poster_folder, tmp_path, "one"))
    two = run_audit(_config(poster_folder, tmp_path, "two", run={"workers": 2, "chunk_size": 2},
                            counterfactual={"enabled": True}))
    base_cf = run_audit(_config(poster_folder, tmp_path, "one-cf", counterfactual={"enabled": True}))
    rows = lambda r: pd.read_parquet(r.run_dir / "images.parquet").sort_values("path").reset_index(drop=True)  # noqa: E731
    assert two.summary["n_failed"] == 0 and two.summary["n_images"] == 12
    pd.testing.assert_frame_equal(rows(base_cf), rows(two))
    oom = run_audit(_config(poster_folder, tmp_path, "oom", model={"factory": "tests.audit.test_threads_and_oom:build_oom_cnn"},
                            run={"chunk_size": 12}))
    assert oom.summary["n_failed"] == 0
    assert oom.summary["oom"]["batches_split"] >= 2, oom.summary["oom"]
    pd.testing.assert_frame_equal(rows(base), rows(oom))
