"""The text -> emotion classifier behind EA (emotion alignment).

ArtEmis measured EA with a classifier trained on the training utterances. We use TF-IDF
(word 1-2 grams, sublinear tf) + multinomial logistic regression: deterministic, fast
on CPU and strong enough for the task (ArtEmis' own reached about 63%).

EA is only comparable between runs that use the *same* classifier, so
``load_or_train_classifier`` trains it once per :func:`classifier_identity` (a hash of the
training utterances and labels) and caches it; every later run (and every concurrent
process, serialised by a file lock) loads that copy. Stored on storage every node sees
(``data.ea_classifier_dir``), it is trained once per cluster, not once per node.

The cache never unpickles anything: a classifier is a directory holding
``classifier.json`` (classes, vocabulary, parameters, held-out accuracy, fingerprint) and
``arrays.npz`` (idf, coef, intercept; read with ``allow_pickle=False``). Prediction
always runs through the same numpy code from these arrays, freshly fitted or loaded,
so a save/load round trip gives bit-identical probabilities.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from filelock import FileLock
from scipy.special import expit
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

FORMAT_VERSION = 1
META_FILE = "classifier.json"
ARRAYS_FILE = "arrays.npz"
_FINGERPRINT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ClassifierCacheError(RuntimeError):
    """A saved classifier cannot be read; the message names the offending file.

    We raise rather than silently retrain: the cached classifier is what makes EA
    comparable across runs, so a damaged copy needs a human look (delete the named
    directory to retrain it).
    """


@dataclass(frozen=True)
class ClassifierParams:
    """Hyper-parameters of the TF-IDF + logistic-regression classifier.

    ``min_df`` and ``max_features`` bound the bigram vocabulary (and so the size of the
    cached coefficients) on the ~400k ArtEmis utterances.
    """

    ngram_min: int = 1
    ngram_max: int = 2
    sublinear_tf: bool = True
    min_df: int = 2
    max_features: int | None = 200_000
    C: float = 1.0
    max_iter: int = 2000
    held_out_fraction: float = 0.1

    def vectorizer(self, vocabulary: dict[str, int] | None = None) -> TfidfVectorizer:
        """A TF-IDF vectorizer with these parameters (fixed vocabulary when loading)."""
        return TfidfVectorizer(
            ngram_range=(self.ngram_min, self.ngram_max),
            sublinear_tf=self.sublinear_tf,
            min_df=self.min_df,
            max_features=self.max_features,
            vocabulary=vocabulary,
            dtype=np.float64,
        )

    def logistic_regression(self, seed: int) -> LogisticRegression:
        """Multinomial (the lbfgs default for >2 classes) logistic regression."""
        return LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=seed)


class EmotionClassifier:
    """TF-IDF + logistic regression emotion classifier with pickle-free persistence."""

    def __init__(self, params: ClassifierParams | None = None) -> None:
        self.params = params or ClassifierParams()
        self.classes: tuple[str, ...] = ()
        self.held_out_accuracy: float | None = None
        self.dataset_fingerprint: str | None = None
        self.seed: int | None = None
        self.n_train: int = 0
        self._vectorizer: TfidfVectorizer | None = None
        self._coef: np.ndarray | None = None
        self._intercept: np.ndarray | None = None

    # ------------------------------------------------------------------ training
    def fit(self, texts: Sequence[str], labels: Sequence[str], seed: int = 0) -> EmotionClassifier:
        """Measure held-out accuracy on a seeded stratified split, then refit on everything.

        The held-out accuracy documents how trustworthy EA is; the final model uses all
        utterances because the classifier is a measuring instrument, not a result.
        """
        texts, labels = _validate_training_data(texts, labels)
        train_idx, test_idx = _split_indices(labels, self.params.held_out_fraction, seed)
        held_out = EmotionClassifier(self.params)
        held_out._set_state(**self._fitted_state([texts[i] for i in train_idx], [labels[i] for i in train_idx], seed))
        predicted = held_out.predict([texts[i] for i in test_idx])
        self.held_out_accuracy = float(np.mean([p == labels[i] for p, i in zip(predicted, test_idx)]))
        self._set_state(**self._fitted_state(texts, labels, seed))
        self.seed = seed
        self.n_train = len(texts)
        return self

    def _fitted_state(self, texts: list[str], labels: list[str], seed: int) -> dict[str, Any]:
        """Fit sklearn and keep only what prediction needs (classes, vocabulary, arrays)."""
        vectorizer = self.params.vectorizer()
        features = vectorizer.fit_transform(texts)
        model = self.params.logistic_regression(seed).fit(features, labels)
        return {
            "classes": [str(c) for c in model.classes_],
            "vocabulary": _vocabulary_list(vectorizer),
            "idf": vectorizer.idf_,
            "coef": model.coef_,
            "intercept": model.intercept_,
        }

    def _set_state(
        self,
        classes: Sequence[str],
        vocabulary: Sequence[str],
        idf: np.ndarray,
        coef: np.ndarray,
        intercept: np.ndarray,
    ) -> None:
        """Install the learned arrays and a vectorizer rebuilt from vocabulary + idf."""
        vectorizer = self.params.vectorizer(vocabulary={term: i for i, term in enumerate(vocabulary)})
        vectorizer.idf_ = np.asarray(idf, dtype=np.float64)
        self._vectorizer = vectorizer
        self.classes = tuple(classes)
        self._coef = np.asarray(coef, dtype=np.float64)
        self._intercept = np.asarray(intercept, dtype=np.float64)

    # ---------------------------------------------------------------- prediction
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities, shape (n_texts, n_classes), columns in ``self.classes`` order.

        Same arithmetic as sklearn's LogisticRegression.predict_proba (softmax of the
        decision function; logistic for two classes), done on the stored arrays.
        """
        if self._vectorizer is None or self._coef is None or self._intercept is None:
            raise RuntimeError("EmotionClassifier is not fitted; call fit() or load()")
        features = self._vectorizer.transform(list(texts))
        decision = np.asarray(features @ self._coef.T) + self._intercept
        if self._coef.shape[0] == 1:  # binary: sklearn stores one row for the 2nd class
            positive = expit(decision[:, 0])
            return np.vstack([1 - positive, positive]).T
        decision -= decision.max(axis=1, keepdims=True)
        np.exp(decision, out=decision)
        decision /= decision.sum(axis=1, keepdims=True)
        return decision

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The most probable emotion of each text."""
        if len(texts) == 0:
            return []
        return [self.classes[i] for i in np.argmax(self.predict_proba(texts), axis=1)]

    # --------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> None:
        """Write ``classifier.json`` + ``arrays.npz`` into ``directory`` (created if needed)."""
        if self._vectorizer is None or self._coef is None or self._intercept is None:
            raise RuntimeError("cannot save an unfitted EmotionClassifier")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "classes": list(self.classes),
            "vocabulary": _vocabulary_list(self._vectorizer),
            "params": dataclasses.asdict(self.params),
            "held_out_accuracy": self.held_out_accuracy,
            "dataset_fingerprint": self.dataset_fingerprint,
            "seed": self.seed,
            "n_train": self.n_train,
            "sklearn_version": sklearn.__version__,
        }
        (directory / META_FILE).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        with open(directory / ARRAYS_FILE, "wb") as handle:
            np.savez(handle, idf=self._vectorizer.idf_, coef=self._coef, intercept=self._intercept)

    @classmethod
    def load(cls, directory: str | Path) -> EmotionClassifier:
        """Rebuild a classifier saved by ``save``; ClassifierCacheError names a bad file."""
        directory = Path(directory)
        meta = _read_meta(directory / META_FILE)
        arrays = _read_arrays(directory / ARRAYS_FILE)
        try:
            params = ClassifierParams(**meta["params"])
            classifier = cls(params)
            classifier._set_state(meta["classes"], meta["vocabulary"], arrays["idf"], arrays["coef"], arrays["intercept"])
            classifier.held_out_accuracy = meta["held_out_accuracy"]
            classifier.dataset_fingerprint = meta["dataset_fingerprint"]
            classifier.seed = meta["seed"]
            classifier.n_train = int(meta["n_train"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ClassifierCacheError(f"invalid saved classifier in {directory / META_FILE}: {exc!r}") from exc
        _check_shapes(classifier, directory / ARRAYS_FILE)
        return classifier


def load_or_train_classifier(
    cache_dir: str | Path,
    dataset_fingerprint: str,
    texts: Sequence[str],
    labels: Sequence[str],
    seed: int = 0,
    params: ClassifierParams | None = None,
) -> EmotionClassifier:
    """The dataset's shared EA classifier: loaded from the cache, trained on first use.

    The cache entry is ``<cache_dir>/emotion-classifier-<fingerprint>/``. ``texts``,
    ``labels``, ``seed`` and ``params`` are only used when training: whoever comes first
    defines the classifier for that dataset, so all runs share it. A per-fingerprint file
    lock serialises processes (the others wait while one trains) and the entry is written
    to a temporary directory and renamed into place, so nobody sees half a classifier.
    A damaged entry raises ClassifierCacheError naming the file (see its docstring).
    """
    _check_fingerprint(dataset_fingerprint)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    entry = cache_dir / f"emotion-classifier-{dataset_fingerprint}"
    with FileLock(str(cache_dir / f"{entry.name}.lock")):
        if entry.exists():
            return _load_entry(entry, dataset_fingerprint)
        classifier = EmotionClassifier(params).fit(texts, labels, seed=seed)
        classifier.dataset_fingerprint = dataset_fingerprint
        _save_atomically(classifier, entry)
        return classifier


def classifier_identity(texts: Sequence[str], labels: Sequence[str], params: ClassifierParams | None = None) -> str:
    """The EA classifier's identity: a hash of its training utterances and labels (in order),
    its hyper-parameters and the storage format, and nothing else.

    Runs that train on the same utterances share one classifier whatever their tokenizer,
    lexicon, sentence length or feature-cache folder (none of which the classifier reads),
    so their EA is comparable; runs log this identity (MLflow param ``ea_classifier.id``).
    """
    params = params or ClassifierParams()
    h = hashlib.sha256(f"format={FORMAT_VERSION}|".encode())
    h.update(json.dumps(dataclasses.asdict(params), sort_keys=True).encode())
    h.update(fingerprint_texts(texts, labels).encode())
    return h.hexdigest()[:16]


def fingerprint_texts(texts: Sequence[str], labels: Sequence[str]) -> str:
    """sha256 of the (text, label) pairs in order; length-prefixed so it is unambiguous."""
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    digest = hashlib.sha256()
    for text, label in zip(texts, labels):
        for part in (text, label):
            data = part.encode("utf-8")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
    return digest.hexdigest()


# ---------------------------------------------------------------------- helpers
def _validate_training_data(texts: Sequence[str], labels: Sequence[str]) -> tuple[list[str], list[str]]:
    """Lists of str of equal length with at least two classes, or a clear error."""
    texts, labels = list(texts), list(labels)
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    bad = next((x for x in (*texts, *labels) if not isinstance(x, str)), None)
    if bad is not None:
        raise TypeError(f"texts and labels must be str, got {type(bad).__name__}: {bad!r}")
    if len(set(labels)) < 2:
        raise ValueError("need at least two distinct labels to train the emotion classifier")
    return texts, labels


def _split_indices(labels: list[str], held_out_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded stratified train/held-out split of indices (unstratified if a class is tiny)."""
    indices = list(range(len(labels)))
    try:
        train, test = train_test_split(indices, test_size=held_out_fraction, random_state=seed, stratify=labels)
    except ValueError as exc:
        warnings.warn(f"stratified held-out split impossible ({exc}); using a random split", stacklevel=3)
        train, test = train_test_split(indices, test_size=held_out_fraction, random_state=seed)
    return list(train), list(test)


def _vocabulary_list(vectorizer: TfidfVectorizer) -> list[str]:
    """The vocabulary as a list of terms indexed by feature column."""
    terms = [""] * len(vectorizer.vocabulary_)
    for term, column in vectorizer.vocabulary_.items():
        terms[column] = term
    return terms


def _check_fingerprint(fingerprint: str) -> None:
    """The fingerprint names a directory: only letters, digits, '.', '_' and '-'."""
    if not isinstance(fingerprint, str) or not _FINGERPRINT_RE.match(fingerprint):
        raise ValueError(
            f"dataset fingerprint {fingerprint!r} must be 1-128 characters of letters, digits, '.', '_', '-'"
        )


def _load_entry(entry: Path, dataset_fingerprint: str) -> EmotionClassifier:
    """Load a cache entry and make sure it belongs to the requested dataset."""
    classifier = EmotionClassifier.load(entry)
    if classifier.dataset_fingerprint != dataset_fingerprint:
        raise ClassifierCacheError(
            f"{entry / META_FILE} is for dataset {classifier.dataset_fingerprint!r}, "
            f"not {dataset_fingerprint!r}"
        )
    return classifier


def _save_atomically(classifier: EmotionClassifier, entry: Path) -> None:
    """Save into a sibling temp directory, then rename it to ``entry`` in one step."""
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}.tmp-"))
    try:
        classifier.save(tmp)
        os.replace(tmp, entry)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _read_meta(path: Path) -> dict[str, Any]:
    """classifier.json as a dict, or ClassifierCacheError naming it."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClassifierCacheError(f"cannot read saved classifier file {path}: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        found = meta.get("format_version") if isinstance(meta, dict) else type(meta).__name__
        raise ClassifierCacheError(f"{path} has format {found!r}, expected format_version {FORMAT_VERSION}")
    return meta


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The npz arrays (never unpickled), or ClassifierCacheError naming the file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: np.array(data[name], dtype=np.float64) for name in ("idf", "coef", "intercept")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise ClassifierCacheError(f"cannot read saved classifier file {path}: {exc!r}") from exc


def _check_shapes(classifier: EmotionClassifier, path: Path) -> None:
    """Arrays must agree with the vocabulary and classes, else the file is damaged."""
    n_features = len(classifier._vectorizer.vocabulary_) if classifier._vectorizer is not None else -1
    n_classes = len(classifier.classes)
    rows = 1 if n_classes == 2 else n_classes
    coef, intercept = classifier._coef, classifier._intercept
    if coef is None or intercept is None or coef.shape != (rows, n_features) or intercept.shape != (rows,):
        raise ClassifierCacheError(
            f"{path}: array shapes coef {None if coef is None else coef.shape}, intercept "
            f"{None if intercept is None else intercept.shape} do not match {n_classes} classes "
            f"and {n_features} features"
        )
