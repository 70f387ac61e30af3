"""Property-based tests (hypothesis): metrics, geometry, and a fuzz of the config loader and ``--set``.

The metric and geometry properties are the definitions in the README, checked on random maps,
masks, sizes and boxes rather than on a few hand-picked ones.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from auditors.config.loading import apply_overrides, config_from_dict, load_config, parse_yaml
from auditors.config.schema import AuditConfig
from auditors.data.geometry import placement_for, polygons_to_mask, warp_image, warp_mask, warp_points, xywh_to_polygon
from auditors.errors import ConfigError
from auditors.measure.metrics import region_metrics

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- metrics

sizes = st.tuples(st.integers(2, 12), st.integers(2, 12))


@st.composite
def map_and_labels(draw, n_regions=st.integers(1, 4)):
    """A non-negative finite map with positive sum and a partition of its pixels into R labels."""
    h, w = draw(sizes)
    r = draw(n_regions)
    values = draw(arrays(np.float64, (h, w), elements=st.floats(0, 1e6, allow_nan=False, allow_infinity=False)))
    assume(values.sum() > 0)
    labels = draw(arrays(np.int64, (h, w), elements=st.integers(0, r - 1)))
    return values, labels, r


def _metrics(values: np.ndarray, masks: np.ndarray, tolerance: int = 0) -> dict[str, np.ndarray]:
    out = region_metrics(torch.from_numpy(values)[None], torch.from_numpy(masks)[None], tolerance)
    return {k: v[0].numpy() for k, v in out.items()}


@FAST
@given(map_and_labels())
def test_masses_of_a_partition_are_in_0_1_and_sum_to_1(case):
    values, labels, r = case
    masks = np.stack([labels == i for i in range(r)])
    m = _metrics(values, masks)
    assert np.all((m["mass"] >= 0) & (m["mass"] <= 1 + 1e-12))
    assert math.isclose(float(m["mass"].sum()), 1.0, rel_tol=0, abs_tol=1e-9)
    assert math.isclose(float(m["area"].sum()), 1.0, abs_tol=1e-12)
    assert m["hit"].sum() == 1.0, "the argmax pixel is in exactly one region of a partition"
    np.testing.assert_allclose(m["area"], [(labels == i).mean() for i in range(r)])


@FAST
@given(map_and_labels(), st.floats(1e-6, 1e6))
def test_lift_and_mass_are_invariant_to_scaling_the_map(case, scale):
    values, labels, r = case
    masks = np.stack([labels == i for i in range(r)])
    a, b = _metrics(values, masks), _metrics(values * scale, masks)
    np.testing.assert_allclose(b["mass"], a["mass"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(b["lift"], a["lift"], rtol=1e-9, equal_nan=True)
    np.testing.assert_array_equal(b["hit"], a["hit"])


@FAST
@given(map_and_labels(n_regions=st.just(1)))
def test_an_empty_mask_has_zero_mass_zero_area_and_undefined_lift(case):
    values, _, _ = case
    m = _metrics(values, np.zeros((1, *values.shape), bool))
    assert m["mass"][0] == 0 and m["area"][0] == 0 and m["hit"][0] == 0
    assert math.isnan(m["lift"][0])


@FAST
@given(sizes, st.sampled_from([0.0, float("nan"), float("inf")]), st.data())
def test_zero_and_non_finite_maps_have_undefined_mass_and_hit_never_zero(hw, bad, data):
    values = data.draw(arrays(np.float64, hw, elements=st.floats(0, 10)))
    if bad == 0.0:
        values = np.zeros(hw)
    else:
        values[data.draw(st.integers(0, hw[0] - 1)), data.draw(st.integers(0, hw[1] - 1))] = bad
    mask = data.draw(arrays(np.bool_, (1, *hw)))
    m = _metrics(values, mask)
    assert math.isnan(m["mass"][0]) and math.isnan(m["hit"][0]), "a degenerate map is never '0 mass on the region'"
    assert math.isclose(m["area"][0], mask.mean())


# --------------------------------------------------------------------------- geometry


@st.composite
def placements_and_boxes(draw):
    src = (draw(st.integers(12, 90)), draw(st.integers(12, 90)))
    out = (draw(st.integers(12, 80)), draw(st.integers(12, 80)))
    mode = draw(st.sampled_from(["stretch", "center_crop", "letterbox"]))
    x0 = draw(st.integers(0, src[1] - 4))
    y0 = draw(st.integers(0, src[0] - 4))
    w = draw(st.integers(3, src[1] - x0))
    h = draw(st.integers(3, src[0] - y0))
    return src, out, mode, (x0, y0, w, h)


def _centre_distance_to_box(shape: tuple[int, int], box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed distances (inside > 0) of pixel centres to the box's edges, per axis, as one min."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]] + 0.5
    x0, y0 = box.min(axis=0)
    x1, y1 = box.max(axis=0)
    return np.minimum.reduce([xs - x0, x1 - xs, ys - y0, y1 - ys]), (xs, ys)


@settings(max_examples=80, deadline=None)
@given(placements_and_boxes())
def test_a_box_mapped_through_each_resize_mode_lands_where_its_pixels_went(case):
    src, out, mode, box = case
    p = placement_for(src, out, mode)
    img = np.zeros((*src, 3), np.uint8)
    x0, y0, w, h = box
    img[y0 : y0 + h, x0 : x0 + w] = 255
    warped = warp_image(img, p)[..., 0].astype(int)
    mapped = warp_points(xywh_to_polygon(box), p)
    inside, _ = _centre_distance_to_box(out, mapped)
    # Resampling blurs an edge over about one source pixel (in output pixels) plus one output pixel.
    margin = max(p.sx, p.sy) + 1.0
    deep_inside, far_outside = inside > margin, inside < -margin
    assert np.all(warped[deep_inside] >= 250), "pixels well inside the mapped box must be the box's pixels"
    assert np.all(warped[far_outside] <= 5), "pixels well outside the mapped box must not be the box's pixels"
    # Masks and polygons follow the same mapping: the warped mask agrees with the rasterised mapped box
    # everywhere except within the blur margin of its edges.
    mask = warp_mask(polygons_to_mask([xywh_to_polygon(box)], src), p)
    raster = polygons_to_mask([mapped], out)
    settled = deep_inside | far_outside
    np.testing.assert_array_equal(mask[settled], raster[settled])


@FAST
@given(st.tuples(st.integers(1, 400), st.integers(1, 400)), st.tuples(st.integers(8, 300), st.integers(8, 300)),
       st.sampled_from(["stretch", "center_crop", "letterbox"]))
def test_placements_cover_or_fit_the_canvas_as_their_mode_promises(src, out, mode):
    p = placement_for(src, out, mode)
    corners = warp_points(np.array([[0.0, 0.0], [src[1], src[0]]]), p)
    if mode == "stretch":
        np.testing.assert_allclose(corners, [[0, 0], [out[1], out[0]]])
    elif mode == "letterbox":  # whole image visible
        assert corners[0, 0] >= -1e-9 and corners[0, 1] >= -1e-9
        assert corners[1, 0] <= out[1] + 1e-9 and corners[1, 1] <= out[0] + 1e-9
    else:  # centre crop: canvas fully covered
        assert corners[0, 0] <= 1e-9 and corners[0, 1] <= 1e-9
        assert corners[1, 0] >= out[1] - 1e-9 and corners[1, 1] >= out[0] - 1e-9


# --------------------------------------------------------------------------- config loader and --set fuzz

MINIMAL = {"name": "fuzz", "dataset": {"root": "data"}, "model": {"arch": "resnet18"}}
KEYS = ["name", "dataset.root", "dataset.limit", "model.arch", "model.classes", "model.input_size", "model.mean",
        "model.target_layer", "cam.target", "cam.batch_size", "cam.device", "regions.border.width", "regions.priority",
        "regions.custom", "gate.max_lift", "gate.max_effect", "counterfactual.enabled", "counterfactual.regions",
        "output.dir", "run.chunk_size", "stats.ci", "tokens.max_hamming", "nonsense.key", "model"]
yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["~nosuchuser/x", "~", "/dev/null", "../../etc/passwd", "a\u2028b", "fc", "avgpool", "text", "1e400"]),
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12,
)


def _only_config_errors(fn, *args):
    """Run fn; the only acceptable failure is a ConfigError (exit 2), never another exception (exit 3)."""
    try:
        result = fn(*args)
    except ConfigError as exc:
        assert str(exc).strip(), "an error message must say something"
        return None
    return result


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(KEYS), yaml_values), max_size=4))
def test_fuzzed_set_overrides_give_a_config_or_a_config_error(pairs):
    overrides = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}" for k, v in pairs]
    data = _only_config_errors(apply_overrides, MINIMAL, overrides)
    if data is not None:
        cfg = _only_config_errors(config_from_dict, data)
        assert cfg is None or isinstance(cfg, AuditConfig)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=3))
def test_fuzzed_raw_set_strings_give_a_config_or_a_config_error(raw):
    data = _only_config_errors(apply_overrides, MINIMAL, raw)
    if data is not None:
        _only_config_errors(config_from_dict, data)


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda s: s.encode("utf-8"))))
def test_fuzzed_config_bytes_give_a_config_or_a_config_error(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_bytes(raw)
    _only_config_errors(load_config, path)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["name", "dataset", "model", "cam", "gate", "regions", "output", "x"]), yaml_values,
                       max_size=6))
def test_fuzzed_config_documents_give_a_config_or_a_config_error(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, **doc}), encoding="utf-8")
    _only_config_errors(load_config, path)


def test_yaml_bombs_and_duplicates_are_refused_quickly():
    laughs = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(9)
    )
    with pytest.raises(ConfigError, match="more than 100000 nodes"):
        parse_yaml(laughs, "bomb")
    with pytest.raises(ConfigError, match="duplicate key 'b'"):
        parse_yaml("a: {b: 1, b: 2}\n", "dup")
    with pytest.raises(ConfigError, match="recursive YAML alias"):
        parse_yaml("a: &x [*x]\n", "loop")
    assert parse_yaml("base: &b {x: 1}\nd:\n  <<: *b\n  x: 2\n", "merge") == {"base": {"x": 1}, "d": {"x": 2}}


# --------------------------------------------------------------------------- names, manifests, image bytes fuzz

from auditors.config.schema import DatasetConfig  # noqa: E402
from auditors.data.decoding import load_rgb  # noqa: E402
from auditors.data.discovery import discover  # noqa: E402
from auditors.errors import InputError  # noqa: E402

path_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["..", "../x.png", "/etc/passwd", "a/../../b.png", "a\x00b.png", " ", "a/./b.png", "~/x.png", "C:\\x.png"]),
)
label_values = st.one_of(st.none(), st.text(max_size=8), st.integers(), st.floats(allow_nan=True), st.sampled_from(["a", "b"]))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(path_text, label_values), max_size=8), st.sampled_from([".csv", ".parquet"]))
def test_fuzzed_manifests_are_listed_or_recorded_never_crash(tmp_path_factory, rows, suffix):
    import pandas as pd

    base = tmp_path_factory.mktemp("m")
    (base / "root" / "a").mkdir(parents=True)
    (base / "root" / "a" / "x.png").write_bytes(b"\x89PNG")
    df = pd.DataFrame({"path": [r[0] for r in rows], "label": [r[1] for r in rows]}, dtype=object)
    manifest = base / f"m{suffix}"
    try:
        if suffix == ".csv":
            df.to_csv(manifest, index=False)
        else:
            df.astype(str).to_parquet(manifest, index=False)  # parquet columns need one type
    except (UnicodeEncodeError, ValueError):
        assume(False)  # the fuzz could not even write this manifest
    try:
        index = discover(DatasetConfig(root=base / "root", manifest=manifest), ["a", "b"])
    except ConfigError:
        return
    root = (base / "root").resolve()
    for e in index.entries:  # whatever is listed stays inside the root
        assert root in (root / e.path).resolve().parents
    assert all({"path", "stage", "reason"} <= set(err) and err["reason"] for err in index.errors)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1, max_size=20),
                min_size=1, max_size=6, unique=True))
def test_fuzzed_file_names_in_an_image_folder_are_listed_or_recorded(tmp_path_factory, names):
    base = tmp_path_factory.mktemp("f") / "root" / "cls"
    base.mkdir(parents=True)
    made = []
    for n in names:
        try:
            (base / n).write_bytes(b"x")
            made.append(n)
        except OSError:  # too long, "." or ".." etc.: the filesystem refuses it, nothing to test
            continue
    index = discover(DatasetConfig(root=base.parent))
    seen = {e.path for e in index.entries} | {e["path"] for e in index.errors}
    for n in made:
        if not n.startswith("."):  # hidden files are skipped by design
            assert f"cls/{n}" in seen, n


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.binary(max_size=400), st.sampled_from([b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\xff\xd8\xff", b"BM", b"II*\x00"]).flatmap(
    lambda head: st.binary(max_size=200).map(lambda tail: head + tail))))
def test_fuzzed_image_bytes_decode_or_raise_input_error(data):
    try:
        arr = load_rgb("fuzz.bin", data)
    except InputError as err:
        assert err.reason
        return
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
