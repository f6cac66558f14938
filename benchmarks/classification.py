"""Classification protocols of table 4: 1-NN Euclidean / DTW with the UCR/UEA archive's conventions, and the
TS2Vec / MOMENT SVM protocol for frozen embeddings.

1-NN (`one_nn_results`) runs the library's raw-series searchers (`EuclideanScanSearcher`, `DTWSearcher`) with k=1
over the training split and reports test accuracy beside the archive's published figure (`PUBLISHED`). The
conventions, chosen because they reproduce the archive, and measured on the shipped files:

- UCR univariate equal-length sets (GunPoint, ItalyPowerDemand): the series as shipped (the archive files are
  already z-normalised; z-normalising them again gives the same accuracies). DTW has a full window.
- UEA multivariate sets (BasicMotions): the raw, un-normalised series (the UEA benchmark's DTW figures are on the
  raw data: per-channel z-normalisation moves DTW_I from 1.000 to 0.875). ED over all channels at once, DTW_D =
  one warping path for all channels (`dtw_ndim`), DTW_I = sum of the per-channel DTW distances.
- UCR variable-length sets (PickupGestureWiimoteZ, 29-361 steps): the UCR archive computed its baselines on an
  equal-length version padded at the end with low-amplitude values, each series then z-normalised over the
  padded length (`ucr_padded`, zeros here; Gaussian noise of std 1e-3 gives the same figures). No NaN is used
  anywhere. Beside it the table reports conventions that need no padding at all: DTW between the series at their
  own lengths, ED after linear resampling of every series to the longest length, and the `_eq` files (the
  equal-length version of the UEA bake-off redux, padded with the series mean plus noise).
- UEA variable-length sets (JapaneseVowels, 7-29 steps, not shipped; `benchmarks/archive_sets.py`): the raw
  series at their own lengths, as for UEA's equal-length sets: DTW of unequal lengths reproduces the UEA figures
  (DTW_I 0.959, DTW_D 0.949); ED is taken after linear resampling to the longest length, and no convention tried
  (that one, zero / last-value / mean padding, truncation to the shortest, the `_eq` files) gives UEA's 0.924.

`svm_protocol` is the evaluation of TS2Vec (Yue et al. 2022, `tasks/classification.py: fit_svm`), also used by
MOMENT: an RBF-kernel SVC (gamma "scale") on the frozen embeddings, C chosen by 5-fold cross-validated grid search
on the training split only.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import numpy as np

# The archive's published test accuracies. UCR: Dau et al., "The UCR Time Series Archive" (2019), DataSummary table
# (1 - error of "ED (w=0)" and "DTW (w=100)", i.e. full window). UEA: Bagnall et al., "The UEA multivariate time
# series classification archive, 2018", benchmark table (default train/test split).
PUBLISHED = {
    "GunPoint": {"1-NN ED": 0.913, "1-NN DTW": 0.907},
    "ItalyPowerDemand": {"1-NN ED": 0.955, "1-NN DTW": 0.950},
    "BasicMotions": {"1-NN ED": 0.676, "1-NN DTW_I": 1.000, "1-NN DTW_D": 0.975},
    "PickupGestureWiimoteZ": {"1-NN ED": 0.560, "1-NN DTW": 0.660},
    # archive sets the project does not ship (`benchmarks/archive_sets.py`), for the unseen-set check
    "ArrowHead": {"1-NN ED": 0.800, "1-NN DTW": 0.703},
    "OSULeaf": {"1-NN ED": 0.521, "1-NN DTW": 0.591},
    "ACSF1": {"1-NN ED": 0.540, "1-NN DTW": 0.640},
    "JapaneseVowels": {"1-NN ED": 0.924, "1-NN DTW_I": 0.959, "1-NN DTW_D": 0.949},
    "Coffee": {"1-NN ED": 1.000, "1-NN DTW": 1.000},
}
SOURCES = {
    "GunPoint": "UCR 2018 (Dau et al.)",
    "ItalyPowerDemand": "UCR 2018 (Dau et al.)",
    "BasicMotions": "UEA 2018 (Bagnall et al.)",
    "PickupGestureWiimoteZ": "UCR 2018 (Dau et al.)",
    "ArrowHead": "UCR 2018 (Dau et al.)",
    "OSULeaf": "UCR 2018 (Dau et al.)",
    "ACSF1": "UCR 2018 (Dau et al.)",
    "JapaneseVowels": "UEA 2018 (Bagnall et al.)",
    "Coffee": "UCR 2018 (Dau et al.)",
}
TOLERANCE = 0.01

# TS2Vec's grid: C in {1e-4, ..., 1e4, inf}.
SVM_C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4, np.inf)


# ---------------------------------------------------------------------------------------------------------------
# 1-NN
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class NNResult:
    """One 1-NN accuracy: `method` ("1-NN ED", "1-NN DTW", "1-NN DTW_D", "1-NN DTW_I"), the `convention` it used,
    whether it is the convention that the archive's figure is compared with (`archive`), and that figure."""

    dataset: str
    method: str
    convention: str
    accuracy: float
    archive: bool
    published: float | None = None
    seconds: float = 0.0

    @property
    def matches(self) -> bool | None:
        if self.published is None or not self.archive:
            return None
        return abs(self.accuracy - self.published) <= TOLERANCE + 1e-9


def ucr_padded(
    series: Sequence[np.ndarray], length: int, noise_std: float = 0.0, rng: np.random.Generator | None = None
) -> list[np.ndarray]:
    """The UCR archive's equal-length version of variable-length series: each `(length_i, channels)` series padded
    at the end to `length` with zeros, or with Gaussian noise of std `noise_std` (the UCR archive pads with
    low-amplitude random values). Leading/trailing NaN rows are dropped first; the result has no NaN. Z-normalise
    afterwards (over the padded length) as UCR does."""
    from modeling_trace.retrieval.baselines import clean_series

    rng = rng if rng is not None else np.random.default_rng(0)
    out = []
    for i, s in enumerate(series):
        x = clean_series(s, znormalize=False, position=i)
        if len(x) > length:
            raise ValueError(f"Series {i} has {len(x)} steps, more than the padded length {length}.")
        padded = np.zeros((length, x.shape[1]), dtype=np.float64)
        if noise_std:
            padded[len(x) :] = rng.normal(0.0, noise_std, (length - len(x), x.shape[1]))
        padded[: len(x)] = x
        out.append(padded)
    return out


def one_nn_accuracy(searcher, queries, train_labels, test_labels) -> float:
    """Accuracy of the 1-NN rule: each query gets the label of its nearest corpus series (ties: lowest row)."""
    hits = searcher.search(queries, k=1, return_rows=False)
    train_labels = np.asarray(train_labels)
    predictions = train_labels[hits.indices[:, 0]]
    return float(np.mean(predictions == np.asarray(test_labels)))


def series_of(dataset) -> list[np.ndarray]:
    """`past_values` of a `load_ucr(..., pad=False)` split as a list of float64 `(length_i, channels)` arrays."""
    return [np.asarray(v, dtype=np.float64) for v in dataset["past_values"]]


def one_nn_results(name: str, data_dir=None, variants: bool = True) -> list[NNResult]:
    """1-NN ED and DTW (full window) accuracies on one shipped UCR/UEA set, archive convention first (see the module
    docstring), then, with `variants`, the other conventions (z-normalised, own lengths, resampled, `_eq` files)."""
    from modeling_trace.retrieval import DTWSearcher, EuclideanScanSearcher
    from trace_datasets.ucr import load_ucr

    dd = load_ucr(name, data_dir, pad=False)
    train, test = series_of(dd["train"]), series_of(dd["test"])
    y_train, y_test = np.asarray(dd["train"]["label"]), np.asarray(dd["test"]["label"])
    channels = train[0].shape[1]
    lengths = {len(s) for s in train + test}
    published = PUBLISHED.get(name, {})
    results: list[NNResult] = []

    def run(method, convention, archive, build, corpus, queries, labels=(y_train, y_test)):
        started = time.perf_counter()
        accuracy = one_nn_accuracy(build(corpus), queries, *labels)
        results.append(
            NNResult(
                name,
                method,
                convention,
                accuracy,
                archive,
                published.get(method) if archive else None,
                time.perf_counter() - started,
            )
        )

    def ed(znormalize, **kw):
        return lambda corpus: EuclideanScanSearcher(corpus, znormalize=znormalize, **kw)

    def dtw(znormalize, multivariate="dependent"):
        return lambda corpus: DTWSearcher(corpus, znormalize=znormalize, multivariate=multivariate)

    dtw_methods = (
        [("1-NN DTW", "dependent")] if channels == 1 else [("1-NN DTW_D", "dependent"), ("1-NN DTW_I", "independent")]
    )
    if len(lengths) == 1:
        shipped = "series as shipped (no extra z-normalisation)"
        run("1-NN ED", shipped, True, ed(False), train, test)
        for method, mode in dtw_methods:
            run(method, shipped, True, dtw(False, mode), train, test)
        if variants:
            znorm = "each series z-normalised per channel"
            run("1-NN ED", znorm, False, ed(True), train, test)
            for method, mode in dtw_methods:
                run(method, znorm, False, dtw(True, mode), train, test)
        return results

    longest = max(lengths)
    # UCR's baselines are on its padded equal-length files; UEA's on the raw series at their own lengths
    uea = SOURCES.get(name, "").startswith("UEA")
    padded_train, padded_test = ucr_padded(train, longest), ucr_padded(test, longest)
    ucr = f"UCR: zero-padded at the end to {longest}, then z-normalised"

    def padded_rows(archive):
        run("1-NN ED", ucr, archive, ed(True), padded_train, padded_test)
        for method, mode in dtw_methods:
            run(method, ucr, archive, dtw(True, mode), padded_train, padded_test)

    def own_length_rows(znormalize, tag, archive):
        resampled = f"own lengths, {tag}, linearly resampled to {longest}"
        run("1-NN ED", resampled, archive, ed(znormalize, length=longest), train, test)
        for method, mode in dtw_methods:
            run(method, f"own lengths, {tag} (DTW of unequal lengths)", archive, dtw(znormalize, mode), train, test)

    if uea:
        own_length_rows(False, "raw", archive=True)
    else:
        padded_rows(archive=True)
    if not variants:
        return results
    if uea:
        padded_rows(archive=False)
    rng = np.random.default_rng(0)
    noisy_train, noisy_test = (ucr_padded(split, longest, noise_std=1e-3, rng=rng) for split in (train, test))
    noisy = "UCR, padding = N(0, 0.001) noise (seed 0) instead of zeros, then z-normalised"
    run("1-NN ED", noisy, False, ed(True), noisy_train, noisy_test)
    for method, mode in dtw_methods:
        run(method, noisy, False, dtw(True, mode), noisy_train, noisy_test)
    if not uea:
        own_length_rows(False, "raw", archive=False)
    own_length_rows(True, "z-normalised", archive=False)
    try:
        eq = load_ucr(name, data_dir, pad=False, variant="eq")
    except FileNotFoundError:
        return results
    eq_train, eq_test = series_of(eq["train"]), series_of(eq["test"])
    eq_labels = (np.asarray(eq["train"]["label"]), np.asarray(eq["test"]["label"]))
    for znormalize, tag in ((False, "as shipped"), (True, "z-normalised")):
        run("1-NN ED", f"`{name}_eq` files, {tag}", False, ed(znormalize), eq_train, eq_test, eq_labels)
        for method, mode in dtw_methods:
            run(method, f"`{name}_eq` files, {tag}", False, dtw(znormalize, mode), eq_train, eq_test, eq_labels)
    return results


# ---------------------------------------------------------------------------------------------------------------
# SVM on frozen embeddings
# ---------------------------------------------------------------------------------------------------------------


def svm_protocol(
    train_X, train_y, test_X, test_y, seed: int = 0, *, n_splits: int = 5, n_jobs: int = 1, cv_repeats: int = 1
) -> dict:
    """TS2Vec / MOMENT classification protocol for frozen embeddings: `SVC(kernel="rbf", gamma="scale")`, C chosen
    by grid search over `SVM_C_GRID` ({1e-4, ..., 1e4, inf}) with stratified `n_splits`-fold cross-validation on the
    training split only (folds shuffled with `seed`), refit on the whole training split, accuracy on the test split.

    As in TS2Vec's `fit_svm`, a training split too small for cross-validation (fewer than 50 samples, or fewer than
    5 per class on average) gets C = inf (a hard margin) without a search (when libsvm finds no finite solution for
    it, the largest finite C that has one); so does one whose smallest class has
    fewer than 2 members (the folds shrink to the smallest class size otherwise). That hard-margin SVM is still
    scored by the same stratified folds when every class has 2 members or more (`cv_accuracy`), so a caller can
    compare feature sets on the training split alone. With `cv_repeats` > 1, `cv_accuracy` is the chosen SVM's
    mean over `cv_repeats` different shufflings of those folds (`RepeatedStratifiedKFold`; C is still chosen by the
    one `n_splits`-fold search): a steadier score for choosing between feature sets on small training splits, where
    one shuffling moves it by a sample or two.

    Returns:
        `{"accuracy", "C", "cross_validated", "cv_accuracy", "classes", "predictions", "scores", "oof_predictions",
        "oof_scores"}`: `cross_validated` says whether C was searched; `cv_accuracy` is the chosen SVM's mean fold
        accuracy on the training split (None with a class of 1, or when a fold's fit has no finite solution);
        `predictions` and `scores` (decision function, one column per class of `classes`) are the refitted SVM's on
        the test split, for [`svm_vote`]; `oof_predictions` / `oof_scores` the same for each training series from
        the fold SVM (chosen C, the first shuffling's folds) that did not see it (None without folds), for
        [`train_chosen_vote`].
    """
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV, RepeatedStratifiedKFold, StratifiedKFold, cross_val_score
    from sklearn.svm import SVC

    train_X, test_X = np.asarray(train_X, dtype=np.float64), np.asarray(test_X, dtype=np.float64)
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    if train_X.ndim != 2 or test_X.ndim != 2 or train_X.shape[1] != test_X.shape[1]:
        raise ValueError(f"Embeddings must be (n, dim) with one dim; got {train_X.shape} and {test_X.shape}.")
    if len(train_X) != len(train_y) or len(test_X) != len(test_y):
        raise ValueError("Each split needs one label per embedding.")
    _, counts = np.unique(train_y, return_counts=True)
    folds = int(min(n_splits, counts.min()))
    svm = SVC(kernel="rbf", gamma="scale", max_iter=10_000_000)
    grid = list(SVM_C_GRID)
    cv_accuracy, fold_scores = None, None
    if len(train_y) // len(counts) < 5 or len(train_y) < 50 or folds < 2:
        # too small to search C: the hardest margin, C = inf first, then the largest finite C of the grid
        order, cross_validated = sorted(range(len(grid)), key=lambda i: -grid[i]), False
    else:
        search = GridSearchCV(
            svm,
            {"C": grid},
            cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed),
            n_jobs=n_jobs,
            refit=False,
        )
        search.fit(train_X, train_y)
        # the best C by fold accuracy first (first in the grid on ties, as GridSearchCV's refit)
        order, cross_validated = np.argsort(search.cv_results_["rank_test_score"], kind="stable"), True
        fold_scores = search.cv_results_["mean_test_score"]
    # Refitted on the whole training split. libsvm can fail to converge to finite dual coefficients there (a hard
    # margin, C = inf, on features of large scale: ACSF1's power levels); then the next C in that order is taken.
    for index in order:
        model = _fit_finite(clone(svm).set_params(C=grid[index]), train_X, train_y)
        if model is not None:
            chosen = float(grid[index])
            break
    else:
        raise ValueError("No C of the grid gives an SVM with finite coefficients on this training split.")
    if fold_scores is not None:
        cv_accuracy = float(fold_scores[index])
    elif folds >= 2:  # the hard-margin SVM is still scored by the same stratified folds
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        cv_accuracy = float(np.mean(cross_val_score(model, train_X, train_y, cv=splitter, n_jobs=n_jobs)))
    if cv_repeats > 1 and folds >= 2:
        splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=cv_repeats, random_state=seed)
        cv_accuracy = float(np.mean(cross_val_score(model, train_X, train_y, cv=splitter, n_jobs=n_jobs)))
    if cv_accuracy is not None and not np.isfinite(cv_accuracy):
        cv_accuracy = None  # a fold whose fit failed (libsvm: no finite solution) scores NaN: no score, not a best one
    oof_predictions = oof_scores = None
    if folds >= 2:
        oof = _out_of_fold(model, train_X, train_y, StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed))
        if oof is not None:
            oof_predictions, oof_scores = (part.tolist() for part in oof)
    predictions, scores = model.predict(test_X), _class_scores(model, test_X)
    return {
        "accuracy": float(np.mean(predictions == test_y)),
        "C": chosen,
        "cross_validated": cross_validated,
        "cv_accuracy": cv_accuracy,
        "classes": model.classes_.tolist(),
        "predictions": predictions.tolist(),
        "scores": scores.tolist(),
        "oof_predictions": oof_predictions,
        "oof_scores": oof_scores,
    }


def _fit_finite(model, X, y):
    """`model.fit(X, y)`, or None when libsvm finds no finite solution (its "not finite" dual coefficients error);
    any other error is raised."""
    try:
        return model.fit(X, y)
    except ValueError as error:
        if "not finite" not in str(error):
            raise
        return None


def _class_scores(model, X) -> np.ndarray:
    """The SVM's decision function with one column per class of `model.classes_` (binary too)."""
    scores = model.decision_function(X)
    return np.stack([-scores, scores], axis=1) if scores.ndim == 1 else scores


def _out_of_fold(model, train_X, train_y, splitter):
    """Predictions and class scores of `model`'s hyper-parameters for each training series, by the fold model that
    did not see it (refitted per fold; `cross_val_predict` gives one of the two per call). None when a fold's fit has
    no finite solution, or a fold lacks a class (its score columns would not line up)."""
    from sklearn.base import clone

    classes = np.unique(train_y)
    predictions = np.empty(len(train_y), dtype=train_y.dtype)
    scores = np.empty((len(train_y), len(classes)))
    for fit_rows, held_rows in splitter.split(train_X, train_y):
        fold = _fit_finite(clone(model), train_X[fit_rows], train_y[fit_rows])
        if fold is None or len(fold.classes_) != len(classes):
            return None
        predictions[held_rows] = fold.predict(train_X[held_rows])
        scores[held_rows] = _class_scores(fold, train_X[held_rows])
    return predictions, scores


def _vote(predictions: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Majority vote of `predictions` (members, n); a tie goes to the tied class with the largest summed `scores`
    (members, n, classes)."""
    votes = (predictions[None] == classes[:, None, None]).sum(1)  # (classes, n)
    summed = scores.sum(0).T  # (classes, n)
    tied = votes == votes.max(0, keepdims=True)
    return classes[np.where(tied, summed, -np.inf).argmax(0)]


def svm_vote(results: Sequence[dict], test_y) -> float:
    """Test accuracy of the majority vote of several [`svm_protocol`] results on the same test split (one SVM per
    feature set, each with its own C chosen on the training split): each test series gets the class most SVMs
    predict; a tie goes to the tied class with the largest decision score summed over the SVMs. Nothing is chosen,
    so the vote uses no accuracy, of the training split or the test split, to pick between the feature sets."""
    if not results:
        raise ValueError("svm_vote needs at least one svm_protocol result.")
    classes = np.asarray(results[0]["classes"])
    if any(r["classes"] != results[0]["classes"] for r in results):
        raise ValueError("Every SVM of a vote must be trained on the same classes.")
    predictions = np.asarray([r["predictions"] for r in results])  # (members, n)
    if predictions.shape[1] != len(test_y):
        raise ValueError(f"The SVMs predicted {predictions.shape[1]} test series; there are {len(test_y)} labels.")
    chosen = _vote(predictions, np.asarray([r["scores"] for r in results]), classes)
    return float(np.mean(chosen == np.asarray(test_y)))


def train_chosen_vote(results: Sequence[dict], train_y) -> dict:
    """The vote of the `k` best-ranked [`svm_protocol`] results, `k` chosen on the training split only.

    `results` must come in rank order, best first (as the caller ranks feature sets by `cv_accuracy`). For each
    `k` = 1 ... n, the vote of the first `k` members is scored on their out-of-fold training predictions (each
    series predicted by the fold model that did not see it, with the member's own C); the `k` with the best
    out-of-fold accuracy wins, the largest on ties. `k` = 1 is the single best-ranked SVM, `k` = n the vote of all.
    Members without out-of-fold predictions (training split too small for folds, or a fold with no finite
    solution) are left out of the vote, unless none has them: then it is the vote of all.

    Returns:
        `{"k", "members", "oof_accuracy"}`: `members` are indices into `results` (score them on the test split with
        `svm_vote([results[i] for i in members], test_y)`), `oof_accuracy` the out-of-fold accuracy per `k` (empty
        when no member has them).
    """
    if not results:
        raise ValueError("train_chosen_vote needs at least one svm_protocol result.")
    train_y = np.asarray(train_y)
    usable = [i for i, r in enumerate(results) if r.get("oof_predictions") is not None]
    if not usable:
        members, oof_accuracy = list(range(len(results))), []
    else:
        classes = np.asarray(results[usable[0]]["classes"])
        if any(len(results[i]["oof_predictions"]) != len(train_y) for i in usable):
            raise ValueError("Out-of-fold predictions must cover the training labels given.")
        predictions = np.asarray([results[i]["oof_predictions"] for i in usable])
        scores = np.asarray([results[i]["oof_scores"] for i in usable])
        oof_accuracy = [
            float(np.mean(_vote(predictions[:k], scores[:k], classes) == train_y)) for k in range(1, len(usable) + 1)
        ]
        best = max(range(len(oof_accuracy)), key=lambda k: (oof_accuracy[k], k))
        members = usable[: best + 1]
    return {"k": len(members), "members": members, "oof_accuracy": oof_accuracy}
