"""avicore.experiments.load: results.json as one row per seed × method, for every shape the experiments write."""

from __future__ import annotations

import json
import math

import pytest

from avicore.experiments import load
from avicore.experiments._runner import write_json


def _write(tmp_path, seeds, experiment="x"):
    write_json(tmp_path / "results.json", {"experiment": experiment, "config": {}, "seeds": seeds, "summary": None})
    return tmp_path


def test_flat_methods_give_one_row_per_seed_and_method(tmp_path):
    seeds = [{"seed": s, "seconds": 1.0, "optimum_elbo": -5.0 - s, "best_affine": {"w0": 3.0},
              "methods": {"F-VI": {"elbo": -6.0, "trace": [1.0, 2.0], "gap": {"value": 0.0, "se": 0.1}},
                          "MLP(4)": {"elbo": float("nan"), "converged": False}}} for s in range(3)]
    rows = load(_write(tmp_path, seeds), as_frame=False)
    assert [(r["seed"], r["method"]) for r in rows] == [(s, m) for s in range(3) for m in ("F-VI", "MLP(4)")]
    first = rows[0]
    assert first["experiment"] == "x" and first["optimum_elbo"] == -5.0 and first["seconds"] == 1.0
    assert "seed.seconds" not in first
    assert first["gap.value"] == 0.0 and first["gap.se"] == 0.1  # nested dicts flattened
    assert "trace" not in first  # lists only with traces=True
    assert math.isnan(rows[1]["elbo"]) and rows[1]["converged"] is False  # "nan" strings restored
    assert load(tmp_path, as_frame=False, traces=True)[0]["trace"] == [1.0, 2.0]


def test_sub_cases_in_dicts_and_lists_become_context_columns(tmp_path):
    seed = {"seed": 0, "seconds": 2.0, "n_obs": 7,
            "likelihoods": {"poisson": {"full_rank": {"elbo": -1.0}, "methods": {"F-VI": {"elbo": -2.0}}},
                            "bernoulli": {"methods": {"F-VI": {"elbo": -3.0}, "MLP(1)": {"elbo": -4.0}}}},
            "per_n": [{"n_obs": 100, "methods": {"MLP(8)": {"gap": 0.5}}},
                      {"n_obs": 1000, "methods": {"MLP(8)": {"gap": 0.25}}}]}
    rows = load(_write(tmp_path, [seed]), as_frame=False)
    got = [(r.get("likelihood"), r.get("n_obs"), r["method"], r.get("elbo", r.get("gap"))) for r in rows]
    assert got == [("poisson", 7, "F-VI", -2.0), ("bernoulli", 7, "F-VI", -3.0),
                   ("bernoulli", 7, "MLP(1)", -4.0), (None, 100, "MLP(8)", 0.5), (None, 1000, "MLP(8)", 0.25)]
    # A sub-case's own scalar shadows the seed's of the same name; a fit's number shadows both, prefixed by level.
    seed["per_n"][0]["methods"]["MLP(8)"]["seconds"] = 9.0
    rows = load(_write(tmp_path, [seed]), as_frame=False)
    assert rows[3]["seconds"] == 9.0 and rows[3]["seed.seconds"] == 2.0 and "seed.seconds" not in rows[4]


def test_as_frame_gives_a_dataframe_when_pandas_is_there(tmp_path):
    pd = pytest.importorskip("pandas")
    seeds = [{"seed": 0, "methods": {"F-VI": {"elbo": -1.0}}}]
    frame = load(_write(tmp_path, seeds), as_frame=True)
    assert isinstance(frame, pd.DataFrame) and list(frame["method"]) == ["F-VI"]


def test_missing_or_foreign_files_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="found no"):
        load(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match=r"is not an avicore experiment.s results\.json"):
        load(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load(tmp_path / "results.json")
