"""joblib's backend="rayipy": batches run as pool calls on the workers; scikit-learn too."""

from __future__ import annotations

import os

import pytest

joblib = pytest.importorskip("joblib")
pytest.importorskip("sklearn")

from sklearn.datasets import load_iris  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.tree import DecisionTreeClassifier  # noqa: E402

from rayipy.util.joblib import register_rayipy  # noqa: E402


def fit_pid(estimator, X, y):
    """A scorer that records which process ran the fit it scores."""
    return os.getpid()


def test_parallel_runs_on_the_workers(cluster):
    register_rayipy()
    with joblib.parallel_config(backend="rayipy"):
        pids = joblib.Parallel(n_jobs=-1)(joblib.delayed(os.getpid)() for _ in range(20))
        squares = joblib.Parallel(n_jobs=2)(joblib.delayed(pow)(i, 2) for i in range(100))
    assert os.getpid() not in pids and len(set(pids)) == 2   # -1: both of the cluster's CPUs
    assert squares == [i * i for i in range(100)]


def test_grid_search_fits_on_the_workers(cluster):
    register_rayipy()
    X, y = load_iris(return_X_y=True)
    search = GridSearchCV(DecisionTreeClassifier(random_state=0), {"max_depth": [1, 2, 3, 4]},
                          cv=3, n_jobs=-1, refit=False,
                          scoring={"pid": fit_pid, "accuracy": "accuracy"})
    with joblib.parallel_config(backend="rayipy"):
        search.fit(X, y)
    results = search.cv_results_
    pids = {int(p) for split in range(3) for p in results[f"split{split}_test_pid"]}
    assert os.getpid() not in pids and pids
    assert max(results["mean_test_accuracy"]) > 0.9


def test_memmapping_options_other_than_joblibs_defaults_are_refused(cluster):
    register_rayipy()
    with pytest.raises(ValueError, match="mmap_mode"):
        with joblib.parallel_config(backend="rayipy", mmap_mode="w+"):
            joblib.Parallel(n_jobs=2)(joblib.delayed(abs)(i) for i in range(2))
