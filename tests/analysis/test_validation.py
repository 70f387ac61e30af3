"""Great Expectations checks added for interventions: a placebo on its own region is a broken control."""

import numpy as np

def test_a_placebo_overlapping_its_region_fails_validation():
    import pandas as pd

    from auditors.analysis.validation import images_expectations, validate_tables

    df = pd.DataFrame({
        "path": ["a", "b", "c"], "pred": ["x"] * 3, "confidence": [0.5] * 3, "cam_status": ["ok"] * 3,
        "text_mass": [0.1] * 3, "text_area": [0.1] * 3, "text_lift": [1.0] * 3, "text_hit": [0.0] * 3,
        "text_norm_lift": [0.5, np.nan, 0.2],
        "text_placebo_overlap": [0.0, np.nan, 0.3], "text_placebo_status": ["ok", None, "overlap"],
    })
    exps = images_expectations(["x"], ["text"], ["text"], 0.0)
    assert validate_tables({"images": (df, exps)})["success"], "a recorded no-placebo image is not an error"
    df.loc[0, "text_placebo_overlap"] = 0.1  # an 'ok' placebo on 10% of the region: a broken control
    out = validate_tables({"images": (df, images_expectations(["x"], ["text"], ["text"], 0.0))})
    assert not out["success"] and out["n_failed"] == 1

