"""No stale numbers: the process-wide model and engine caches follow the weights on disk."""

import torch

from auditors.config import config_from_dict
from auditors.models.engines import engine_for
from auditors.models.loading import get_model
from tests.conftest import TinyCNN


def _weights(seed: int) -> dict:
    torch.manual_seed(seed)
    return TinyCNN(3).state_dict()


def _config(tmp_path, ckpt, **extra):
    return config_from_dict({
        "name": "cache", "dataset": {"root": str(tmp_path)},
        "model": {"factory": "tests.conftest:build_tiny_cnn", "checkpoint": str(ckpt), "input_size": [32, 32],
                  "classes": ["a", "b", "c"]},
        **extra,
    })


def test_overwritten_checkpoint_gives_new_numbers_in_the_same_process(tmp_path, one_torch_thread):
    ckpt = tmp_path / "model.pt"
    torch.save(_weights(1), ckpt)
    cfg = _config(tmp_path, ckpt, cam={"device": "cpu"})
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    device = torch.device("cpu")
    first = engine_for(cfg.model, cfg.cam, "features", device).compute(x)
    assert engine_for(cfg.model, cfg.cam, "features", device) is engine_for(cfg.model, cfg.cam, "features", device), "unchanged weights: reused"
    model_before = get_model(cfg.model, device)

    torch.save(_weights(2), ckpt)  # same path, same size, same architecture
    second = engine_for(cfg.model, cfg.cam, "features", device).compute(x)
    assert get_model(cfg.model, device) is not model_before
    assert not torch.allclose(first.probs, second.probs)
    expected = TinyCNN(3)
    expected.load_state_dict(_weights(2))
    with torch.no_grad():
        torch.testing.assert_close(second.probs, torch.softmax(expected(x), 1), rtol=1e-4, atol=1e-5)


def test_a_rewrite_with_restored_mtime_is_still_seen(tmp_path, one_torch_thread):
    """The file hash is memoised per stat stamp; ctime (which utime cannot set back) keeps a
    same-size rewrite with its old mtime from being served from the memo."""
    import os

    from auditors.models.loading import model_fingerprint

    ckpt = tmp_path / "model.pt"
    torch.save(_weights(1), ckpt)
    cfg = _config(tmp_path, ckpt)
    before = model_fingerprint(cfg.model)
    assert model_fingerprint(cfg.model) == before
    st = os.stat(ckpt)
    torch.save(_weights(2), ckpt)
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(ckpt).st_size == st.st_size and os.stat(ckpt).st_mtime_ns == st.st_mtime_ns
    assert model_fingerprint(cfg.model) != before
