"""Membership rules: a shallow decision tree that mimics a segmentation, read as short rules.

The tree is fitted on the customers' features in their own units (missing values allowed), to
the segment ids a model gave them. Its accuracy against those ids is the rules' fidelity. Each
segment's rule is the union of at most ``MAX_TERMS`` of the leaves the tree sends to it (largest
first), with its precision (the share of customers the rule matches who are in the segment) and
coverage (the share of the segment the rule matches), counted on the same customers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.tree import DecisionTreeClassifier

DEPTHS = (2, 3, 4, 5)
"""Tree depths tried, shallowest first: the first whose fidelity reaches ``TARGET_FIDELITY``
gives the rules (else the deepest)."""
TARGET_FIDELITY = 0.85
MIN_LEAF_SHARE = 0.005
"""Smallest leaf, as a share of the customers: a rule never describes a handful of them."""
MAX_TERMS = 3
"""Most alternatives (``... or ...``) a segment's rule shows."""
DUMMY_SEP = "="


@dataclass(frozen=True, slots=True)
class Rules:
    """Membership rules of a segmentation.

    Attributes
    ----------
    table : DataFrame
        One row per segment id: ``segment_id, rule, precision, coverage`` (``rule`` is "" and
        precision NaN when the tree sends no leaf to the segment).
    fidelity : float
        Share of customers whose segment the tree predicts correctly.
    depth : int
        The tree's depth.
    """

    table: pd.DataFrame
    fidelity: float
    depth: int


@dataclass(slots=True)
class _Bound:
    """What a path through the tree requires of one feature: ``low < x <= high``, and whether
    a missing value follows the path."""

    low: float = -np.inf
    high: float = np.inf
    missing: bool = True


def membership_rules(features: pd.DataFrame, ids: np.ndarray, seed: int = 0) -> Rules:
    """Rules that say, in the features' units, which customers each segment holds.

    Parameters
    ----------
    features : DataFrame
        One row per customer: numeric columns (missing values allowed) and text columns (one
        condition per category, "country = FR").
    ids : ndarray of int
        Each customer's segment id (-1: no segment, ruled like a segment).
    """
    X, dummies = _design(features)
    columns = _Columns(
        X.columns,
        frozenset(c for c in X.columns if _is_whole(X[c])),
        dummies,
        frozenset(c for c in X.columns if X[c].isna().any()),
    )
    tree, fidelity = _fit_tree(X, ids, seed)
    leaves, landed = _merged_leaves(tree), tree.apply(X)
    rows = [
        (s, *_segment_rule(ids == s, [f for f in leaves if f.segment == s], landed, tree, columns))
        for s in sorted(int(s) for s in np.unique(ids))
    ]
    table = pd.DataFrame(rows, columns=["segment_id", "rule", "precision", "coverage"])
    return Rules(table, fidelity, int(tree.get_depth()))


def _fit_tree(X: pd.DataFrame, ids: np.ndarray, seed: int) -> tuple[DecisionTreeClassifier, float]:
    """The shallowest tree of ``DEPTHS`` that reaches ``TARGET_FIDELITY`` (else the deepest),
    and its fidelity."""
    leaf_size = max(2, int(MIN_LEAF_SHARE * len(X)))
    for depth in DEPTHS:
        tree = DecisionTreeClassifier(
            max_depth=depth, min_samples_leaf=leaf_size, random_state=seed
        )
        fidelity = float(np.mean(tree.fit(X, ids).predict(X) == ids))
        if fidelity >= TARGET_FIDELITY:
            break
    return tree, fidelity


def _segment_rule(
    members: np.ndarray,
    leaves: list[_Leaf],
    landed: np.ndarray,
    tree: DecisionTreeClassifier,
    columns: _Columns,
) -> tuple[str, float, float]:
    """A segment's rule from its largest leaves, with its precision and coverage."""
    caught = [int(np.isin(landed[members], leaf.nodes).sum()) for leaf in leaves]
    shown = [leaf for _, leaf in sorted(zip(caught, leaves, strict=True), key=lambda p: -p[0])]
    shown = shown[:MAX_TERMS]
    matched = np.isin(landed, [n for leaf in shown for n in leaf.nodes])
    precision = float(members[matched].mean()) if matched.any() else np.nan
    coverage = float(matched[members].mean()) if members.any() else np.nan
    terms = [_conjunction(leaf.path, tree, columns) for leaf in shown]
    return _disjunction(terms), precision, coverage


def _design(features: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, tuple[str, str]]]:
    """Numeric columns as floats, text columns as one 0/1 column per category; and each of
    those to its feature and category."""
    text = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    numeric = features.drop(columns=text).astype("float64")
    parts: list[pd.DataFrame | pd.Series] = [numeric]
    dummies: dict[str, tuple[str, str]] = {}
    for column in text:
        values = features[column].astype("string")
        for category in values.dropna().unique():
            name = f"{column}{DUMMY_SEP}{category}"
            parts.append((values == category).fillna(False).astype(float).rename(name))
            dummies[name] = (str(column), str(category))
    return pd.concat(parts, axis=1), dummies


def _is_whole(values: pd.Series) -> bool:
    present = values.dropna()
    return bool((present == np.round(present)).all())


@dataclass(frozen=True, slots=True)
class _Leaf:
    """A leaf after merging siblings that predict the same segment: the tree's leaves under
    it, its segment and its path (node, went left) from the root."""

    nodes: tuple[int, ...]
    segment: int
    path: tuple[tuple[int, bool], ...]


def _merged_leaves(tree: DecisionTreeClassifier) -> list[_Leaf]:
    """The tree's leaves, with a split whose sides predict the same segment merged into one."""
    inner = tree.tree_
    classes = tree.classes_

    def walk(node: int, path: tuple[tuple[int, bool], ...]) -> list[_Leaf]:
        left, right = inner.children_left[node], inner.children_right[node]
        if left == right:  # a leaf
            segment = int(classes[np.argmax(inner.value[node][0])])
            return [_Leaf((node,), segment, path)]
        below = walk(left, (*path, (node, True))) + walk(right, (*path, (node, False)))
        if len(below) == 2 and below[0].segment == below[1].segment:
            return [_Leaf(below[0].nodes + below[1].nodes, below[0].segment, path)]
        return below

    return walk(0, ())


@dataclass(frozen=True, slots=True)
class _Columns:
    """How to word the design's columns: names, whole-number ones, one-hot ones (to their
    feature and category) and those with missing values."""

    names: pd.Index
    whole: frozenset[str]
    dummies: dict[str, tuple[str, str]]
    with_missing: frozenset[str]


def _conjunction(
    path: tuple[tuple[int, bool], ...], tree: DecisionTreeClassifier, columns: _Columns
) -> str:
    """A path's conditions, one per feature (bounds on the same feature merged)."""
    inner = tree.tree_
    bounds: dict[str, _Bound] = {}
    for node, went_left in path:
        column = str(columns.names[inner.feature[node]])
        bound = bounds.setdefault(column, _Bound())
        threshold = float(inner.threshold[node])
        if went_left:
            bound.high = min(bound.high, threshold)
        else:
            bound.low = max(bound.low, threshold)
        bound.missing &= bool(inner.missing_go_to_left[node]) == went_left
    words = [_condition(c, b, columns) for c, b in bounds.items()]
    return " and ".join(w for w in words if w) or "everyone"


def _condition(column: str, bound: _Bound, columns: _Columns) -> str:
    """One feature's requirement in words: ``frequency >= 2``, ``country = FR``,
    ``(interpurchase_days > 90.5 or none)`` (none: the customer has no value), ``no
    interpurchase_days``, ``interpurchase_days known``; "" when it requires nothing."""
    if column in columns.dummies:
        name, category = columns.dummies[column]
        return f"{name} = {category}" if bound.low >= 0.5 else f"{name} != {category}"
    missing = bound.missing and column in columns.with_missing
    if bound.low == np.inf:  # the tree's split of the missing from the known values
        return f"no {column}"
    whole = column in columns.whole
    low = np.floor(bound.low) + 1 if whole else bound.low  # x > 1.5 is x >= 2 for counts
    high = np.floor(bound.high) if whole else bound.high
    has_low, has_high = bool(np.isfinite(low)), bool(np.isfinite(high))
    if not (has_low or has_high):
        return "" if missing else f"{column} known"
    if whole and has_low and has_high and low == high:
        text = f"{column} = {_number(low)}"
    elif has_low and has_high:
        text = f"{_number(low)} {'<=' if whole else '<'} {column} <= {_number(high)}"
    elif has_low:
        text = f"{column} {'>=' if whole else '>'} {_number(low)}"
    else:
        text = f"{column} <= {_number(high)}"
    return f"({text} or none)" if missing else text


def _disjunction(terms: list[str]) -> str:
    if len(terms) <= 1:
        return "".join(terms)
    return " or ".join(f"({t})" if " and " in t else t for t in terms)


def _number(value: float) -> str:
    """A threshold as people write it: whole numbers plain, others to 3 significant digits."""
    if float(value).is_integer() or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"
