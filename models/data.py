"""Bundled scikit-learn datasets (offline), split and standardised the same way every time."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Dataset(NamedTuple):
    """Train and held-out splits; features standardised with the training split's statistics."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


_LOADERS = {"digits": "load_digits", "wine": "load_wine", "iris": "load_iris", "breast_cancer": "load_breast_cancer"}


def load_classification(name: str = "digits", test_size: float = 0.2, seed: int = 0) -> Dataset:
    """Loads a bundled scikit-learn classification set with a stratified held-out split.

    Args:
      name: one of ``digits``, ``wine``, ``iris``, ``breast_cancer``.
      test_size: fraction held out for testing.
      seed: the split's random state.
    """
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    if name not in _LOADERS:
        raise ValueError(f"load_classification: unknown dataset {name!r}; expected one of {sorted(_LOADERS)}.")
    X, y = getattr(datasets, _LOADERS[name])(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)
    mean, std = X_tr.mean(axis=0), X_tr.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # constant pixels in digits: leave them at zero
    return Dataset((X_tr - mean) / std, y_tr.astype(np.int32), (X_te - mean) / std, y_te.astype(np.int32),
                   int(y.max()) + 1)
