"""Shared fixtures. Prefect runs against a throw-away local server and result store."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

# Must be set before prefect is imported anywhere in the test session. Processes the tests start
# (Dask workers, served flow runs importing a test model factory) inherit it: one folder per session,
# removed when the session ends.
if "PREFECT_HOME" not in os.environ:
    _home = tempfile.mkdtemp(prefix="camaudit-prefect-")
    atexit.register(shutil.rmtree, _home, ignore_errors=True)
    os.environ["PREFECT_HOME"] = _home
os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(Path(os.environ["PREFECT_HOME"]) / "storage"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

SCENETEXT = Path(__file__).resolve().parent / "fixtures" / "scenetext"  # shipped: a clone is complete


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server + database for the whole session (~10 s set-up)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def scenetext_dir() -> Path:
    if not SCENETEXT.is_dir():
        pytest.fail(f"real scene-text photos missing: expected {SCENETEXT} (they ship with the repository)")
    return SCENETEXT


def draw_word(img: np.ndarray, word: str, org: tuple[int, int], scale: float = 0.8, thickness: int = 2) -> tuple[int, int, int, int]:
    """Print ``word`` dark on ``img`` in place; return its box (x0, y0, x1, y1)."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    (w, h), base = cv2.getTextSize(word, font, scale, thickness)
    cv2.putText(img, word, org, font, scale, (10, 10, 10), thickness, cv2.LINE_AA)
    return org[0], org[1] - h, org[0] + w, org[1] + base


class TinyCNN(torch.nn.Module):
    """conv -> conv -> GAP -> linear: small, and its last conv output is spatial."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(),
        )
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(16, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def fit_full_batch(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float, steps: int = 150) -> torch.nn.Module:
    """Train a tiny test model on all of ``x`` at once with Adam (deterministic given the seed)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def build_tiny_cnn() -> torch.nn.Module:
    """Factory used by test configs (model.factory: tests.conftest:build_tiny_cnn)."""
    torch.manual_seed(0)
    return TinyCNN(3)


@pytest.fixture()
def poster_folder(tmp_path: Path) -> Path:
    """ImageFolder of 3 classes x 4 small non-square posters with a printed word each."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    words = ["SALE", "HELLO", "OPEN"]
    for ci, cls in enumerate(["alpha", "beta", "gamma"]):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            img = np.full((150, 110, 3), 235, np.uint8)
            img[:, :, ci] = rng.integers(120, 200)
            draw_word(img, words[ci], (10, 40 + 20 * i))
            cv2.imwrite(str(root / cls / f"{i}.png"), img[:, :, ::-1])
    return root


def tiny_audit_data(root: Path, tmp: Path, *sections: dict, name: str = "tiny", cache: str = "cache", out: str = "out") -> dict:
    """The config dict of a small audit: the TinyCNN checkpoint (written once per ``tmp``) on the
    images under ``root``, outputs in ``tmp/<out>``, caches in ``tmp/<cache>``, no gallery pixels
    beyond two, sanity check and tokens off.

    Each of ``sections`` ({"cam": {...}, "run": {...}, ...}) is applied in order: a dict value
    updates that section key by key, any other value replaces it. Test modules keep only what
    their case needs in a section dict of their own.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    ckpt = tmp / "tiny.pt"
    if not ckpt.exists():
        torch.save(build_tiny_cnn().state_dict(), ckpt)
    data: dict = {
        "name": name,
        "dataset": {"root": str(root)},
        "model": {"factory": "tests.conftest:build_tiny_cnn", "checkpoint": str(ckpt), "input_size": [64, 64]},
        "output": {"dir": str(tmp / out), "cache_dir": str(tmp / cache), "gallery_size": 2},
        "sanity": {"enabled": False},
        "tokens": {"enabled": False},
    }
    for over in sections:
        for key, value in over.items():
            data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


def tiny_audit_config(root: Path, tmp: Path, *sections: dict, **names):
    """:func:`tiny_audit_data` as a validated AuditConfig."""
    from auditors.config import config_from_dict

    return config_from_dict(tiny_audit_data(root, tmp, *sections, **names))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: with 2 threads every op is a parallel region, and on a machine shared with
    other jobs each barrier can wait a whole scheduler slice for a pre-empted sibling thread."""
    from auditors.models.threads import torch_threads

    with torch_threads(1):
        yield


# Property and fuzz tests (hypothesis) draw the same examples on every run: CI must not pass or fail
# by the luck of the draw. Explore more locally with HYPOTHESIS_PROFILE=explore.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", derandomize=True)
_hypothesis_settings.register_profile("explore", derandomize=False, max_examples=500)
_hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
