"""Bundled scikit-learn datasets (offline), split and standardised the same way every time."""

from __future__ import annotations

import collections
import math
import re
from typing import NamedTuple

import numpy as np

from mdc_jax.experiment.config import ConfigError


class Dataset(NamedTuple):
    """Train and held-out splits; features standardised with the training split's statistics."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


_LOADERS = {"digits": "load_digits", "wine": "load_wine", "iris": "load_iris", "breast_cancer": "load_breast_cancer"}

# The dataset names, each written once; the models' specs list the ones they accept.
CLASSIFICATION = tuple(_LOADERS)
BINARY = ("breast_cancer",)  # the classification sets with two classes
REGRESSION = ("diabetes",)
IMAGES = ("digits",)  # pixel rows in [0, 1], for the autoencoder (its own targets)
TEXT = ("python_source",)  # characters (rnn_charlm) or word tokens (rnn_wordlm) of the stdlib's source

# Samples and classes (0: regression) of the bundled sets, to check a split when a config is loaded.
SIZES = {"digits": (1797, 10), "wine": (178, 3), "iris": (150, 3), "breast_cancer": (569, 2), "diabetes": (442, 0)}


def split_problems(name: str, test_size: float, sizes: tuple[int, int] | None = None) -> list[str]:
    """Why ``train_test_split`` cannot split dataset ``name`` at ``test_size`` (empty when it can).

    ``sizes`` is (samples, classes), by default from :data:`SIZES`; a stratified split needs at least
    one sample of each class on each side, a regression split one sample."""
    n, k = sizes or SIZES.get(name, (0, 0))
    if not n or not 0 < test_size < 1:
        return []  # an unknown set, or a test_size the config checks refuse anyway
    n_test = math.ceil(test_size * n)  # scikit-learn's rounding
    need = max(k, 1)
    if min(n_test, n - n_test) >= need:
        return []
    return [f"data.test_size {test_size} splits data.dataset {name!r} ({n} samples) into {n - n_test} training and "
            f"{n_test} held-out samples; each needs at least {need}" + (f" (one per class: {k} classes)" if k else "")]


def _split(name: str, test_size: float, seed: int, X, y, stratify):
    """scikit-learn's ``train_test_split``; its refusals become a :class:`ConfigError` naming data.test_size."""
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(X, y, test_size=test_size, random_state=seed, stratify=stratify)
    except ValueError as err:
        sizes = (len(y), len(np.unique(y)) if stratify is not None else 0)
        problems = split_problems(name, test_size, sizes) or [f"data.test_size {test_size} cannot split data.dataset "
                                                              f"{name!r}: {err}"]
        raise ConfigError(problems[0]) from None


def load_classification(name: str = "digits", test_size: float = 0.2, seed: int = 0) -> Dataset:
    """Loads a bundled scikit-learn classification set with a stratified held-out split.

    Args:
      name: one of ``digits``, ``wine``, ``iris``, ``breast_cancer``.
      test_size: fraction held out for testing.
      seed: the split's random state.
    """
    from sklearn import datasets

    if name not in _LOADERS:
        raise ValueError(f"load_classification: unknown dataset {name!r}; expected one of {sorted(_LOADERS)}.")
    X, y = getattr(datasets, _LOADERS[name])(return_X_y=True)
    X_tr, X_te, y_tr, y_te = _split(name, test_size, seed, X, y, stratify=y)
    mean, std = X_tr.mean(axis=0), X_tr.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # constant pixels in digits: leave them at zero
    return Dataset((X_tr - mean) / std, y_tr.astype(np.int32), (X_te - mean) / std, y_te.astype(np.int32),
                   int(y.max()) + 1)


class ImageDataset(NamedTuple):
    """Images as rows of pixel intensities in ``[0, 1]``, no labels (an autoencoder's input is its target)."""

    X_train: np.ndarray
    X_test: np.ndarray


def load_images(name: str = "digits", test_size: float = 0.2, seed: int = 0) -> ImageDataset:
    """scikit-learn's bundled ``digits`` (8×8 images, 64 pixels of 0..16) scaled to ``[0, 1]`` by ``/16``.

    The split is :func:`load_classification`'s (stratified by digit, same ``test_size`` and ``seed``), so an
    autoencoder and a classifier of one config see the same training images; the pixels are not standardised.
    """
    from sklearn import datasets

    if name not in IMAGES:
        raise ValueError(f"load_images: unknown dataset {name!r}; expected one of {IMAGES}.")
    X, y = datasets.load_digits(return_X_y=True)
    X_tr, X_te, _, _ = _split(name, test_size, seed, X / 16.0, y, stratify=y)
    return ImageDataset(X_tr, X_te)


class RegressionDataset(NamedTuple):
    """Standardised features; targets standardised too, with the scale kept to report RMSE in units."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    y_mean: float
    y_std: float


def load_regression(name: str = "diabetes", test_size: float = 0.2, seed: int = 0) -> RegressionDataset:
    """scikit-learn's bundled ``diabetes`` regression set, split and standardised (targets too)."""
    from sklearn import datasets

    if name not in REGRESSION:
        raise ValueError(f"load_regression: unknown dataset {name!r}; expected one of {REGRESSION}.")
    X, y = datasets.load_diabetes(return_X_y=True)
    X_tr, X_te, y_tr, y_te = _split(name, test_size, seed, X, y, stratify=None)
    mean, std = X_tr.mean(axis=0), X_tr.std(axis=0)
    y_mean, y_std = float(y_tr.mean()), float(y_tr.std())
    return RegressionDataset((X_tr - mean) / std, (y_tr - y_mean) / y_std, (X_te - mean) / std,
                             (y_te - y_mean) / y_std, y_mean, y_std)


# Printable ASCII, newline and tab: a fixed vocabulary, the same on every machine.
VOCAB = "\n\t" + "".join(chr(c) for c in range(32, 127))
UNKNOWN = "?"


class TextDataset(NamedTuple):
    train: np.ndarray  # int32 character ids
    test: np.ndarray
    vocab: str
    sources: list[str]


def _stdlib_files(root, recursive: bool, exclude: tuple[str, ...], top=None):
    """The stdlib's ``*.py`` files in name order; ``recursive`` walks packages too (a folder's entries in
    name order, depth first), never installed packages (``site-packages``), the build's ``config-*``
    folder or ``_sysconfigdata*.py``, which differ per machine, nor the paths (relative to the stdlib) named in ``exclude``."""
    top = top or root
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.relative_to(top).as_posix() in exclude:
            continue
        if entry.is_file() and entry.suffix == ".py" and not entry.name.startswith("_sysconfigdata"):
            yield entry
        elif (recursive and entry.is_dir() and not entry.name.startswith("config-")
              and entry.name not in ("site-packages", "dist-packages", "__pycache__")):
            yield from _stdlib_files(entry, recursive, exclude, top)


def python_source_files(max_chars: int, recursive: bool = False, exclude: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """``(path relative to the stdlib, text)`` of the Python standard library's own source, which every
    machine with Python has offline: the top-level ``*.py`` files (``recursive``: and its packages') in
    name order, until ``max_chars`` characters (the last file cut there)."""
    import os
    from pathlib import Path

    root = Path(os.__file__).parent
    files, total = [], 0
    for path in _stdlib_files(root, recursive, exclude):
        text = path.read_text(encoding="utf-8", errors="replace")[:max_chars - total]
        files.append((str(path.relative_to(root)), text))
        total += len(text)
        if total >= max_chars:
            break
    return files


def python_source_text(max_chars: int) -> tuple[str, list[str]]:
    """The top-level stdlib source as one text of ``max_chars`` characters, and the files it came from."""
    files = python_source_files(max_chars)
    return "".join(text for _, text in files), [name for name, _ in files]


def encode(text: str) -> np.ndarray:
    index = {ch: i for i, ch in enumerate(VOCAB)}
    unknown = index[UNKNOWN]
    return np.fromiter((index.get(ch, unknown) for ch in text), dtype=np.int32, count=len(text))


def decode(ids) -> str:
    return "".join(VOCAB[int(i)] for i in ids)


def load_text(max_chars: int = 400_000, test_size: float = 0.1) -> TextDataset:
    """Character ids of the stdlib source; the last ``test_size`` fraction is the held-out split."""
    text, sources = python_source_text(max_chars)
    ids = encode(text)
    cut = int(len(ids) * (1 - test_size))
    return TextDataset(ids[:cut], ids[cut:], VOCAB, sources)


# Word-level tokens of source text: identifiers and keywords, digit runs, each other printable character,
# and newlines; spaces and tabs separate tokens and are dropped.
WORD_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+|[^\s]|\n")
UNKNOWN_WORD = "<unk>"
# Generated tables, not code: the codecs' (`'A'  #  0x41 -> LATIN CAPITAL LETTER A`) and HTML's entities.
WORD_EXCLUDE = ("encodings", "html/entities.py")


class WordDataset(NamedTuple):
    train: np.ndarray  # int32 token ids; 0 is UNKNOWN_WORD
    test: np.ndarray
    vocab: list[str]  # vocab[i] is token i
    sources: list[str]


def load_words(max_chars: int, test_size: float, vocab_size: int) -> WordDataset:
    """Word-level token ids of the stdlib's source (packages included, the generated tables of
    :data:`WORD_EXCLUDE` left out); the last ``test_size`` fraction of *every file's* tokens is held out, so both splits come
    from the same mix of modules.

    The vocabulary is ``<unk>`` and the ``vocab_size − 1`` most frequent tokens of the training split (ties
    in token order), fewer when the text has fewer; every other token, in either split, is ``<unk>``.
    """
    files = python_source_files(max_chars, recursive=True, exclude=WORD_EXCLUDE)
    train, test = [], []
    for _, text in files:
        tokens = WORD_TOKEN.findall(text)
        cut = round(len(tokens) * (1 - test_size))
        train += tokens[:cut]
        test += tokens[cut:]
    counts = collections.Counter(train)
    vocab = [UNKNOWN_WORD, *sorted(counts, key=lambda w: (-counts[w], w))[:vocab_size - 1]]
    index = {w: i for i, w in enumerate(vocab)}
    ids = lambda tokens: np.fromiter((index.get(w, 0) for w in tokens), dtype=np.int32, count=len(tokens))
    return WordDataset(ids(train), ids(test), vocab, [name for name, _ in files])
