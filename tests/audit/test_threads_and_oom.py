"""One CAM engine shared by threads (run.workers > 1), and CUDA out-of-memory backoff (run on CPU
by a real model that raises torch.cuda.OutOfMemoryError above a batch size: a subclass, or a
forward pre-hook on one of its modules, the way a GPU fails mid-network)."""

from __future__ import annotations

import threading

import pandas as pd
import pytest
import torch

from auditors.audit.oom import compute_with_backoff, topk_with_backoff
from auditors.cam import CamEngine
from flows.audit import run_audit
from tests.conftest import TinyCNN, build_tiny_cnn, tiny_audit_config


class OomAboveTwo(TinyCNN):
    """TinyCNN that behaves like a GPU that fits 2 images: larger batches raise OOM."""

    def forward(self, x):
        if x.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (simulated for a batch of {x.shape[0]})")
        return super().forward(x)


def build_oom_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return OomAboveTwo(3)


def _oom_above(limit: int):
    def hook(module, args):
        if args[0].shape[0] > limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (injected for a batch of {args[0].shape[0]} > {limit})")
    return hook


def build_hooked_oom_cnn() -> torch.nn.Module:
    """The plain TinyCNN (same weights) whose second conv block runs out of memory above 2 images."""
    model = build_tiny_cnn()
    model.features[3].register_forward_pre_hook(_oom_above(2))
    return model


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


_BASE = {"cam": {"batch_size": 6}, "output": {"gallery_size": 0}, "run": {"chunk_size": 3}}


def _config(root, tmp_path, name, **over):
    return tiny_audit_config(root, tmp_path, _BASE, over, name=name, cache=f"cache-{name}")


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


def test_topk_with_layers_is_halved_at_the_torch_level_and_gives_the_same_maps(one_torch_thread):
    x = torch.randn(7, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    make = lambda m: CamEngine(m.eval(), target_layer="features.4", input_size=(32, 32), layers=["features.1"])  # noqa: E731
    want = make(build_tiny_cnn()).compute_topk(x, 2)
    stats: dict[str, int] = {}
    got = topk_with_backoff(make(build_hooked_oom_cnn()), x, 2, stats)
    for name in ("maps", "logits", "classes", "degenerate"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name))  # float32 sums in another batch order
    assert got.layer_maps.keys() == want.layer_maps.keys() == {"features.1"}
    torch.testing.assert_close(got.layer_maps["features.1"], want.layer_maps["features.1"])
    assert stats == {"oom_splits": 3, "oom_splits_topk": 3}, "7 -> 3+4 -> (1+2)+(2+2)"
    with pytest.raises(torch.cuda.OutOfMemoryError):  # without the backoff the batch is lost
        make(build_hooked_oom_cnn()).compute_topk(x, 2)


@pytest.mark.usefixtures("prefect_server")
def test_topk_layers_interventions_and_failures_batches_that_run_out_of_memory_are_halved(poster_folder, tmp_path):
    """One chunk of 12, batches of 6: the top-k CAM batch (6), the intervention re-runs (2 edited
    copies per image: 12) and the failure analysis' mistaken images all exceed what the injected
    GPU fits (2), are halved until they fit, and give the rows of a run that never ran out."""
    over = {"cam": {"target": "topk", "k": 2, "layers": ["features.1"]}, "counterfactual": {"enabled": True},
            "run": {"chunk_size": 12}, "output": {"failures_per_class": 3}}
    base = run_audit(_config(poster_folder, tmp_path, "base", **over))
    oom = run_audit(_config(poster_folder, tmp_path, "oom", model={"factory": "tests.audit.test_threads_and_oom:build_hooked_oom_cnn"},
                            **over))
    assert oom.summary["n_failed"] == 0 and base.summary["n_failed"] == 0
    stages = oom.summary["oom"]["stages"]
    assert stages.get("topk", 0) >= 2 and stages.get("interventions", 0) >= 2, oom.summary["oom"]
    assert base.summary["oom"]["batches_split"] == 0
    assert oom.summary["oom"]["batches_split"] == sum(stages.values())
    for name, keys in (("images.parquet", ["path"]), ("targets.parquet", ["path", "target_rank"])):
        read = lambda r: pd.read_parquet(r.run_dir / name).sort_values(keys).reset_index(drop=True)  # noqa: E731
        # float32 softmax in other batch shapes moves confidences by ~1e-8; *_effect is a difference of two
        pd.testing.assert_frame_equal(read(base), read(oom), rtol=1e-5, atol=1e-6)
    failures = lambda r: pd.read_parquet(r.run_dir / "failures.parquet").sort_values("path").reset_index(drop=True)  # noqa: E731
    assert len(failures(base)) > 2 and stages.get("failures", 0) >= 1, "the untrained model makes mistakes to analyse"
    pd.testing.assert_frame_equal(failures(base), failures(oom), rtol=1e-5, atol=1e-6)
    errors = (oom.run_dir / "errors.csv").read_text() if (oom.run_dir / "errors.csv").exists() else ""
    assert "OutOfMemory" not in errors
