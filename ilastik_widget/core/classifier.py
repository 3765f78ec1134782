"""The pixel classifier: scikit-learn's Random Forest, deterministic for a seed.

Two presets: :data:`ACCURATE` is ilastik's default forest of 100 full-depth trees; :data:`INTERACTIVE`
is what the session uses while the user paints (fewer trees, no bootstrap, a cap on training pixels
per class; chosen with ``benchmarks/bench_interactive.py`` to keep RF100's accuracy at a fraction of
its cost).
Parameters are plain JSON-able dicts; a fitted forest can be exported to plain numpy arrays
(:meth:`PixelClassifier.to_arrays`), so nothing here needs pickle.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from .soon import once_soon

if TYPE_CHECKING:
    from sklearn.ensemble import RandomForestClassifier

__all__ = ["PixelClassifier", "INTERACTIVE", "ACCURATE", "import_sklearn_soon", "check_forest_arrays"]

# scikit-learn is imported where a forest is made, not with this module: the import takes about 0.8 s, and a widget
# needs no forest until two classes are painted. `import_sklearn_soon` does it in the background meanwhile.


def import_sklearn_soon(delay: float = 2.0) -> None:
    """Import scikit-learn's forest in a background thread after ``delay`` seconds (once per process), so the first
    training does not wait for it. The delay leaves the kernel to the viewer's first chunk requests."""
    once_soon("scikit-learn", _import_sklearn, delay)


def _import_sklearn() -> None:
    import sklearn.ensemble  # noqa: F401


# While painting (measured with benchmarks/bench_interactive.py on 2 cores): 10 trees, each grown on
# every training pixel instead of a bootstrap sample.  Over 6 synthetic images x 5 forests its
# foreground IoU averaged +0.007 against RF100 (bootstrapped 10 or 16 trees: -0.002 / -0.005, with
# single images down to -0.016), at about a tenth of RF100's prediction cost.  The per-class cap
# bounds the fit time when many pixels are labelled.
INTERACTIVE: dict[str, Any] = {
    "n_estimators": 10,
    "max_depth": None,
    "bootstrap": False,
    "max_samples_per_class": 5000,
    "n_jobs": 2,
}
# ilastik's default: 100 trees, full depth, every labelled pixel.
ACCURATE: dict[str, Any] = {
    "n_estimators": 100,
    "max_depth": None,
    "bootstrap": True,
    "max_samples_per_class": None,
    "n_jobs": 2,
}

_PARAMS = (
    "n_estimators",
    "max_depth",
    "seed",
    "n_jobs",
    "max_samples_per_class",
    "max_features",
    "min_samples_leaf",
    "bootstrap",
)


#: Limits of the parameters (a forest beyond them is a mistake or a crafted file, not a classifier).
MAX_TREES = 10_000
MAX_DEPTH = 10_000
MAX_JOBS = 1024
#: Limits of a forest rebuilt from arrays (:meth:`PixelClassifier.from_arrays`).
MAX_CLASSES = 255  # labels are uint8
MAX_FEATURES = 100_000
MAX_NODES = 2**31 - 1


def _int_param(name: str, value: Any, lo: int, hi: int, kind: str = "an integer") -> int:
    """``value`` as an int in [lo, hi]; bools, floats and strings are refused rather than converted."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    if not lo <= int(value) <= hi:
        raise ValueError(f"{name} must be in {lo}..{hi}, got {value}")
    return int(value)


def _optional_int_param(name: str, value: Any, lo: int, hi: int) -> int | None:
    return None if value is None else _int_param(name, value, lo, hi, "None or an integer")


def _check_max_features(value: Any) -> str | int | float | None:
    """scikit-learn's choices: "sqrt", "log2", None (all), an int >= 1, or a fraction in (0, 1]."""
    if value is None or (isinstance(value, str) and value in ("sqrt", "log2")):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        if 1 <= int(value) <= MAX_FEATURES:
            return int(value)
    elif isinstance(value, (float, np.floating)) and 0.0 < float(value) <= 1.0:
        return float(value)
    raise ValueError(
        f'max_features must be "sqrt", "log2", None, an integer >= 1 or a fraction in (0, 1], got {value!r}'
    )


def _as_features(X: Any) -> np.ndarray:
    # scikit-learn's trees read float32; handing over float32 C-contiguous data avoids a copy.
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"features must be a 2D (N, C) array, got shape {X.shape}")
    return np.ascontiguousarray(X, dtype=np.float32)


def subsample_per_class(y: np.ndarray, max_per_class: int | None, seed: int) -> np.ndarray | None:
    """Indices (sorted) keeping at most ``max_per_class`` samples of each class; None keeps all.

    The choice depends only on ``y`` and ``seed`` (deterministic).
    """
    if max_per_class is None:
        return None
    counts = np.bincount(y)
    if counts.max(initial=0) <= max_per_class:
        return None
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.flatnonzero(counts):
        idx = np.flatnonzero(y == c)
        if len(idx) > max_per_class:
            idx = np.sort(rng.choice(idx, size=max_per_class, replace=False))
        keep.append(idx)
    return np.sort(np.concatenate(keep))


class PixelClassifier:
    """Random Forest pixel classifier with probability columns for classes 1..n_classes.

    Parameters
    ----------
    n_estimators : int
        Number of trees.
    max_depth : int, optional
        Depth limit of each tree (None: grow fully, as ilastik).
    seed : int
        Random seed; the same seed and data give the same forest (whatever ``n_jobs``).
    n_jobs : int, optional
        Threads for fitting and predicting.
    max_samples_per_class : int, optional
        Train on at most this many randomly chosen (seeded) pixels of each class.
    max_features : str or int or float
        Features tried per split (scikit-learn's meaning); default ``"sqrt"``.
    min_samples_leaf : int
        Minimum samples per leaf.
    bootstrap : bool
        Train each tree on a bootstrap sample (True, scikit-learn's and ilastik's forest) or on every
        training pixel (the trees then differ only by their random feature choices).
    """

    def __init__(
        self,
        n_estimators: int = 100,
        max_depth: int | None = None,
        seed: int = 0,
        n_jobs: int | None = None,
        max_samples_per_class: int | None = None,
        max_features: str | int | float = "sqrt",
        min_samples_leaf: int = 1,
        bootstrap: bool = True,
    ) -> None:
        self.n_estimators = _int_param("n_estimators", n_estimators, 1, MAX_TREES)
        self.max_depth = _optional_int_param("max_depth", max_depth, 1, MAX_DEPTH)
        self.seed = _int_param("seed", seed, 0, 2**32 - 1)  # scikit-learn's range of random_state
        self.n_jobs = _optional_int_param("n_jobs", n_jobs, -MAX_JOBS, MAX_JOBS)
        if self.n_jobs == 0:
            raise ValueError("n_jobs must not be 0 (None or 1: one thread; -1: all cores)")
        self.max_samples_per_class = _optional_int_param("max_samples_per_class", max_samples_per_class, 1, 2**62)
        self.max_features = _check_max_features(max_features)
        self.min_samples_leaf = _int_param("min_samples_leaf", min_samples_leaf, 1, 2**62)
        if not isinstance(bootstrap, (bool, np.bool_)):
            raise ValueError(f"bootstrap must be True or False, got {bootstrap!r}")
        self.bootstrap = bool(bootstrap)
        self.n_classes: int | None = None
        self.n_features: int | None = None
        self.forest: RandomForestClassifier | None = None
        self._columns: np.ndarray | None = None

    # ------------------------------------------------------------------ params
    def params(self) -> dict[str, Any]:
        """The constructor parameters as a JSON-able dict."""
        return {k: getattr(self, k) for k in _PARAMS}

    @classmethod
    def from_params(cls, d: dict[str, Any]) -> PixelClassifier:
        """A new (unfitted) classifier from :meth:`params` output; unknown keys raise."""
        unknown = set(d) - set(_PARAMS)
        if unknown:
            raise ValueError(f"unknown classifier parameters {sorted(unknown)}; known: {list(_PARAMS)}")
        return cls(**d)

    def clone(self, **overrides: Any) -> PixelClassifier:
        """An unfitted copy with the same parameters (some optionally replaced)."""
        return self.from_params({**self.params(), **overrides})

    @property
    def is_fitted(self) -> bool:
        """True once the forest has been trained."""
        return self.forest is not None

    # ------------------------------------------------------------------ fit / predict
    def fit(self, X: Any, y: Any, n_classes: int) -> PixelClassifier:
        """Fit on features ``X`` (N, C) and labels ``y`` (N,) in 1..n_classes.

        Raises
        ------
        ValueError
            For mismatched shapes, labels outside 1..n_classes or no samples.
        """
        X = _as_features(X)
        y = np.asarray(y).astype(np.int64, copy=False).ravel()
        if len(y) != len(X):
            raise ValueError(f"{len(X)} feature rows but {len(y)} labels")
        if len(y) == 0:
            raise ValueError("cannot fit a classifier without labelled samples")
        if y.min() < 1 or y.max() > n_classes:
            raise ValueError(f"labels must be in 1..{n_classes}, got {y.min()}..{y.max()}")
        keep = subsample_per_class(y, self.max_samples_per_class, self.seed)
        if keep is not None:
            X, y = X[keep], y[keep]
        from sklearn.ensemble import RandomForestClassifier

        forest = RandomForestClassifier(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            random_state=self.seed,
            n_jobs=self.n_jobs,
            max_features=self.max_features,
            min_samples_leaf=self.min_samples_leaf,
            bootstrap=self.bootstrap,
        )
        forest.fit(X, y)
        self.forest = forest
        self.n_classes = int(n_classes)
        self.n_features = X.shape[1]
        self._columns = forest.classes_.astype(np.int64) - 1
        return self

    def predict_proba(self, X: Any, n_jobs: int | None = None) -> np.ndarray:
        """Class probabilities, float32 (N, n_classes); column k is class k+1 (zeros for absent classes).

        Parameters
        ----------
        X : array-like
            (N, C) features, best float32 C-contiguous (no copy then).
        n_jobs : int, optional
            Threads for this call (default: the classifier's ``n_jobs``; the session passes 1 when it
            predicts blocks in parallel).  The result does not depend on it.
        """
        if self.forest is None or self.n_classes is None:
            raise RuntimeError("the classifier is not trained yet")
        X = _as_features(X)
        if X.shape[1] != self.n_features:
            raise ValueError(f"classifier was trained on {self.n_features} features, got {X.shape[1]}")
        out = np.zeros((len(X), self.n_classes), np.float32)
        if len(X) == 0:
            return out
        n = self.n_jobs if n_jobs is None else n_jobs
        if n is None:
            n = 1  # scikit-learn's meaning of None
        elif n < 0:
            n = os.cpu_count() or 1
        if n == 1 or len(X) < 8192:
            out[:, self._columns] = self._mean_of_trees(X)
            return out
        # Threads over rows, not trees: every row is summed over the trees in the same order
        # whatever the thread count, so results do not depend on n_jobs or timing.
        bounds = np.linspace(0, len(X), n + 1).astype(int)
        with ThreadPoolExecutor(n) as pool:
            parts = pool.map(lambda ab: self._mean_of_trees(X[ab[0] : ab[1]]), zip(bounds[:-1], bounds[1:]))
            for (a, b), part in zip(zip(bounds[:-1], bounds[1:]), parts):
                out[a:b, self._columns] = part
        return out

    def _mean_of_trees(self, X: np.ndarray) -> np.ndarray:
        # Sum in tree order and float64, as scikit-learn's sequential predict_proba does; the trees'
        # own prediction releases the GIL, so row chunks in threads run in parallel.
        forest, columns = self.forest, self._columns
        if forest is None or columns is None:
            raise RuntimeError("the classifier is not trained yet")
        acc = np.zeros((len(X), len(columns)), np.float64)
        for tree in forest.estimators_:
            acc += tree.predict_proba(X, check_input=False)
        acc /= len(forest.estimators_)
        return acc

    # ------------------------------------------------------------------ export without pickle
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fitted forest as plain numpy arrays (for npz files); see :meth:`from_arrays`."""
        if self.forest is None:
            raise RuntimeError("the classifier is not trained yet")
        out: dict[str, np.ndarray] = {
            "classes": self.forest.classes_.astype(np.int64),
            "meta": np.array([self.n_classes, self.n_features, len(self.forest.estimators_)], np.int64),
        }
        for i, est in enumerate(self.forest.estimators_):
            state = est.tree_.__getstate__()
            nodes = state["nodes"]
            for name in nodes.dtype.names:
                out[f"tree{i}/{name}"] = np.ascontiguousarray(nodes[name])
            out[f"tree{i}/values"] = np.ascontiguousarray(state["values"])
            out[f"tree{i}/max_depth"] = np.array([state["max_depth"]], np.int64)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], params: dict[str, Any] | None = None) -> PixelClassifier:
        """Rebuild a fitted classifier from :meth:`to_arrays` output (and :meth:`params`).

        The arrays may come from a file someone else made: they are checked completely (:func:`check_forest_arrays`)
        before scikit-learn's compiled tree code sees them, which trusts its node arrays.

        Raises
        ------
        ValueError
            Naming the first array or value that is not a valid forest.
        """
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.tree import DecisionTreeClassifier
        from sklearn.tree._tree import NODE_DTYPE, Tree

        clf = cls.from_params(params or {})
        n_classes, n_features, classes, trees_arrays = check_forest_arrays(arrays)
        n_outputs = 1
        trees = []
        for fields, values, max_depth in trees_arrays:
            nodes = np.zeros(len(values), dtype=NODE_DTYPE)
            for name in NODE_DTYPE.names:
                nodes[name] = fields[name]
            tree = Tree(n_features, np.array([len(classes)], np.intp), n_outputs)
            tree.__setstate__({"max_depth": max_depth, "node_count": len(nodes), "nodes": nodes, "values": values})
            est = DecisionTreeClassifier()
            est.tree_ = tree
            est.n_outputs_ = n_outputs
            est.classes_ = classes
            est.n_classes_ = len(classes)
            est.n_features_in_ = n_features
            trees.append(est)
        forest = RandomForestClassifier(n_estimators=len(trees), n_jobs=clf.n_jobs)
        forest.estimators_ = trees
        forest.classes_ = classes
        forest.n_classes_ = len(classes)
        forest.n_outputs_ = n_outputs
        forest.n_features_in_ = n_features
        forest.estimator_ = DecisionTreeClassifier()
        clf.forest = forest
        clf.n_classes = n_classes
        clf.n_features = n_features
        clf._columns = classes - 1
        return clf

    def __repr__(self) -> str:
        state = "fitted" if self.is_fitted else "unfitted"
        return f"PixelClassifier({', '.join(f'{k}={v!r}' for k, v in self.params().items())}) [{state}]"


# ---------------------------------------------------------------------- checking forest arrays
def _array(arrays: dict[str, np.ndarray], key: str, dtype: Any, ndim: int) -> np.ndarray:
    a = arrays.get(key)
    if a is None:
        raise ValueError(f"forest array {key!r} is missing")
    if not isinstance(a, np.ndarray) or a.dtype != np.dtype(dtype) or a.ndim != ndim:
        got = f"{a.dtype} {a.ndim}D" if isinstance(a, np.ndarray) else type(a).__name__
        raise ValueError(f"forest array {key!r} must be {np.dtype(dtype)} {ndim}D, got {got}")
    return a


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_tree(i: int, arrays: dict[str, np.ndarray], n_features: int, n_values: int) -> tuple:
    """One tree's node fields, values and depth, checked: a tree rooted at node 0 whose children come after their
    parent, features in range, finite numbers."""
    from sklearn.tree._tree import NODE_DTYPE, TREE_LEAF, TREE_UNDEFINED

    p = f"tree{i}/"
    fields = {name: _array(arrays, p + name, NODE_DTYPE.fields[name][0], 1) for name in NODE_DTYPE.names}
    n = len(fields["left_child"])
    if not 1 <= n <= MAX_NODES or any(len(a) != n for a in fields.values()):
        raise ValueError(
            f"tree {i}: its node arrays must have one equal length >= 1, got {[len(a) for a in fields.values()]}"
        )
    values = _array(arrays, p + "values", np.float64, 3)
    if values.shape != (n, 1, n_values):
        raise ValueError(f"tree {i}: values must have shape {(n, 1, n_values)}, got {values.shape}")
    depth_arr = _array(arrays, p + "max_depth", np.int64, 1)
    if depth_arr.shape != (1,):
        raise ValueError(f"tree {i}: max_depth must hold one number, got shape {depth_arr.shape}")
    left, right, feature = fields["left_child"], fields["right_child"], fields["feature"]
    leaf = left == TREE_LEAF
    if np.any(leaf != (right == TREE_LEAF)):
        raise ValueError(f"tree {i}: node {_first(leaf != (right == TREE_LEAF))} has one child (0 or 2 are allowed)")
    inner = ~leaf
    idx = np.arange(n)
    bad = inner & ((left <= idx) | (left >= n) | (right <= idx) | (right >= n))
    if bad.any():
        k = _first(bad)
        raise ValueError(
            f"tree {i}: node {k} has children {int(left[k])}, {int(right[k])}; they must be later nodes of the "
            f"{n} (or {TREE_LEAF} for a leaf)"
        )
    # Children after parents rule out cycles; one parent per node (and none for the root) makes it a tree.
    parents = np.bincount(np.concatenate([left[inner], right[inner]]), minlength=n)
    if parents[0] != 0 or np.any(parents[1:] != 1):
        k = 0 if parents[0] else 1 + _first(parents[1:] != 1)
        raise ValueError(f"tree {i}: node {k} has {int(parents[k])} parents (the root none, every other node one)")
    bad = np.where(inner, (feature < 0) | (feature >= n_features), feature != TREE_UNDEFINED)
    if bad.any():
        k = _first(bad)
        want = f"in 0..{n_features - 1}" if inner[k] else f"{TREE_UNDEFINED} (a leaf)"
        raise ValueError(f"tree {i}: node {k} splits on feature {int(feature[k])}, expected {want}")
    for name in ("threshold", "impurity", "weighted_n_node_samples"):
        if not np.all(np.isfinite(fields[name])):
            raise ValueError(f"tree {i}: {name} of node {_first(~np.isfinite(fields[name]))} is not finite")
    if np.any(fields["n_node_samples"] < 0) or np.any(fields["missing_go_to_left"] > 1):
        raise ValueError(f"tree {i}: negative n_node_samples or missing_go_to_left other than 0/1")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(f"tree {i}: values must be finite and not negative")
    depth = _tree_depth(left, right, inner)
    if int(depth_arr[0]) != depth:
        raise ValueError(f"tree {i}: max_depth is {int(depth_arr[0])} but the tree is {depth} deep")
    return fields, np.ascontiguousarray(values), depth


def _tree_depth(left: np.ndarray, right: np.ndarray, inner: np.ndarray) -> int:
    """Depth of a checked tree, by pointer jumping (log2(depth) vector steps, also for a chain-shaped tree)."""
    n = len(left)
    parent = np.zeros(n, np.int64)
    parent[left[inner]] = np.flatnonzero(inner)
    parent[right[inner]] = np.flatnonzero(inner)
    dist = (np.arange(n) != 0).astype(np.int64)
    while np.any(parent != 0):
        dist = dist + dist[parent]
        parent = parent[parent]
    return int(dist.max())


def check_forest_arrays(arrays: dict[str, np.ndarray]) -> tuple[int, int, np.ndarray, list[tuple]]:
    """Check :meth:`PixelClassifier.to_arrays` output from an untrusted source.

    Every array must have exactly the dtype and shape scikit-learn's tree uses; every tree must be a tree rooted at
    node 0 whose children come after their parent (so no cycles), with feature indices in range for inner nodes and
    the leaf marker for leaves, and finite thresholds and values; ``max_depth`` must be the tree's depth; no array
    may be missing or left over.

    Returns
    -------
    n_classes, n_features, classes, trees
        ``classes``: the fitted classes (int64, increasing, in 1..n_classes); ``trees``: (node fields, values,
        depth) per tree.

    Raises
    ------
    ValueError
        Naming the first problem found.
    """
    if not isinstance(arrays, dict):
        raise ValueError(f"forest arrays must be a dict of arrays, got {type(arrays).__name__}")
    meta = _array(arrays, "meta", np.int64, 1)
    if meta.shape != (3,):
        raise ValueError(f"forest array 'meta' must hold (n_classes, n_features, n_trees), got shape {meta.shape}")
    n_classes, n_features, n_trees = (int(v) for v in meta)
    for name, value, hi in (
        ("n_classes", n_classes, MAX_CLASSES),
        ("n_features", n_features, MAX_FEATURES),
        ("n_trees", n_trees, MAX_TREES),
    ):
        if not 1 <= value <= hi:
            raise ValueError(f"forest {name} must be in 1..{hi}, got {value}")
    classes = _array(arrays, "classes", np.int64, 1)
    if not 1 <= len(classes) <= n_classes or classes[0] < 1 or classes[-1] > n_classes or np.any(np.diff(classes) <= 0):
        raise ValueError(f"forest classes must be increasing labels in 1..{n_classes}, got {classes[:20].tolist()}")
    from sklearn.tree._tree import NODE_DTYPE

    expected = {"meta", "classes"}
    for i in range(n_trees):
        expected.update(f"tree{i}/{name}" for name in (*NODE_DTYPE.names, "values", "max_depth"))
    extra = sorted(set(arrays) - expected)
    if extra:
        raise ValueError(f"unexpected forest arrays {extra[:5]} (a forest of {n_trees} trees has {len(expected)})")
    trees = [_check_tree(i, arrays, n_features, len(classes)) for i in range(n_trees)]
    return n_classes, n_features, classes.copy(), trees
