"""Experiment specs: typed pydantic models of ``experiments/*.yaml`` and their loading."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from segml.errors import SpecError

ATTRIBUTE_KINDS = (
    "demographic",
    "geographic",
    "psychographic",
    "technographic",
    "behavioural",
    "value",
)
OUTCOME_ROLES = ("revenue", "clv", "conversion", "churn")
FamilyName = Literal["kmeans", "gmm", "hdbscan"]
FAMILY_NAMES: tuple[FamilyName, ...] = ("kmeans", "gmm", "hdbscan")


def check_reference_date(day: dt.date) -> dt.date:
    """``day``, refused when after tomorrow (a time zone ahead): features as of a day to come
    would count days that have not passed, as a typo such as 2205 for 2025 does."""
    today = dt.date.today()
    if day > today + dt.timedelta(days=1):
        raise ValueError(f"reference date {day} is after today ({today})")
    return day


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Frozen):
    """A searched numeric range; integers stay integers."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0 (got {self.low})")
        return self


class Choices(_Frozen):
    """A searched categorical dimension."""

    choices: tuple[Any, ...] = Field(min_length=1)


Dimension = Range | Choices | int | float | str | bool | None


class LineAmount(_Frozen):
    """A line's amount derived from its columns: ``quantity`` x ``unit_price``."""

    quantity: str
    unit_price: str


class Returns(_Frozen):
    """What return and cancellation lines are, and how they count.

    A line is a return when its amount (or quantity) is negative, or when its order id starts
    with ``order_prefix``. ``net``: kept, and netted against the customer's purchases;
    ``drop``: quarantined with a reason (the run goes on); ``fail``: bad rows.
    """

    policy: Literal["net", "drop", "fail"] = "fail"
    order_prefix: str | None = Field(None, min_length=1)


class TransactionColumns(_Frozen):
    """How a transaction table maps to customer, time, amount, order and quantity."""

    timestamp: str
    amount: LineAmount | str
    timestamp_format: str | None = None
    order_id: str | None = None
    quantity: str | None = None
    returns: Returns = Returns()

    @field_validator("timestamp_format")
    @classmethod
    def _known_directives(cls, fmt: str | None) -> str | None:
        try:  # strptime knows the directives pandas does; an empty text never matches
            dt.datetime.strptime("", fmt or "")
        except ValueError as exc:
            if "does not match format" not in str(exc):
                raise ValueError(f"not a date format ({exc})") from None
        return fmt

    @model_validator(mode="after")
    def _marker_column(self) -> TransactionColumns:
        if self.returns.order_prefix is not None and self.order_id is None:
            raise ValueError("returns.order_prefix needs an order_id column to look at")
        return self

    @property
    def amount_column(self) -> str:
        """The amount's column in the validated log (``Quantity x Price`` when derived)."""
        if isinstance(self.amount, LineAmount):
            return f"{self.amount.quantity} x {self.amount.unit_price}"
        return self.amount


LogAggregate = Literal["most_frequent", "latest", "sum", "mean", "min", "max"]


class Attributes(_Frozen):
    """Per-customer attribute columns, grouped by the kind of segmentation variable."""

    demographic: tuple[str, ...] = ()
    geographic: tuple[str, ...] = ()
    psychographic: tuple[str, ...] = ()
    technographic: tuple[str, ...] = ()
    behavioural: tuple[str, ...] = ()
    value: tuple[str, ...] = ()
    from_log: dict[str, LogAggregate] = Field(default_factory=dict)
    """Attributes (declared above) derived per customer from the transaction log's column of
    the same name: its most frequent value, latest value, or a numeric aggregate."""

    def columns(self) -> tuple[str, ...]:
        """All declared attribute columns, in declaration order."""
        return tuple(c for kind in ATTRIBUTE_KINDS for c in getattr(self, kind))


class Outcomes(_Frozen):
    """Business-outcome columns: reported per segment, never used as features."""

    revenue: str | None = None
    clv: str | None = None
    conversion: str | None = None
    churn: str | None = None

    def columns(self) -> dict[str, str]:
        """Role -> column for the declared outcomes."""
        return {role: col for role in OUTCOME_ROLES if (col := getattr(self, role))}


class DataSpec(_Frozen):
    """Where the customers come from and what their columns mean."""

    source: Path
    kind: Literal["transactions", "customers"]
    id_column: str
    delimiter: str = Field(",", min_length=1)
    transactions: TransactionColumns | None = None
    customers: Path | None = None
    attributes: Attributes = Attributes()
    outcomes: Outcomes = Outcomes()
    personal: tuple[str, ...] = ()
    reference_date: dt.date | None = None
    bad_rows: Literal["fail", "drop"] = "fail"

    @field_validator("reference_date")
    @classmethod
    def _past(cls, day: dt.date | None) -> dt.date | None:
        return day if day is None else check_reference_date(day)

    @model_validator(mode="after")
    def _consistent(self) -> DataSpec:
        if self.kind == "transactions" and self.transactions is None:
            raise ValueError("kind 'transactions' needs a 'transactions' column mapping")
        if self.kind == "customers" and self.transactions is not None:
            raise ValueError("kind 'customers' takes no 'transactions' mapping")
        if self.kind == "customers" and self.customers is not None:
            raise ValueError("'customers' (an attribute table) is only for kind 'transactions'")
        self._attributes_have_a_source()
        self._one_role_per_column()
        leaked = set(self.personal) & (
            set(self.attributes.columns()) | set(self.outcomes.columns().values())
        )
        if leaked:
            raise ValueError(
                f"personal columns can never be features or outcomes: {sorted(leaked)}"
            )
        return self

    def _one_role_per_column(self) -> None:
        """A column is the id, an attribute or an outcome: outcomes never become features,
        so a column declared as two would silently lose one of its roles."""
        roles: dict[str, str] = {self.id_column: "data.id_column"}
        declared = [
            *(
                (c, f"data.attributes.{kind}")
                for kind in ATTRIBUTE_KINDS
                for c in getattr(self.attributes, kind)
            ),
            *((c, f"data.outcomes.{role}") for role, c in self.outcomes.columns().items()),
        ]
        for column, role in declared:
            if roles.setdefault(column, role) != role:
                raise ValueError(f"column {column!r} is both {roles[column]} and {role}")

    def _attributes_have_a_source(self) -> None:
        derived = self.attributes.from_log
        undeclared = sorted(set(derived) - set(self.attributes.columns()))
        if undeclared:
            raise ValueError(
                f"attributes.from_log: {undeclared[0]!r} is not a declared attribute; list it "
                "under a kind too (e.g. geographic: [Country])"
            )
        if derived and self.kind != "transactions":
            raise ValueError("attributes.from_log is only for kind 'transactions'")
        unsourced = [c for c in self.attributes.columns() if c not in derived]
        if self.kind == "transactions" and self.customers is None and unsourced:
            raise ValueError(
                f"attribute {unsourced[0]!r} has no source: derive it from the log "
                f"(attributes.from_log: {{{unsourced[0]}: most_frequent}}, or latest, sum, "
                "mean, min, max) or name an attribute table in data.customers"
            )

    def recorded(self) -> DataSpec:
        """This data section as a model keeps it: the files' names only, never where they
        were read (a batch's attribute table is passed at scoring time)."""
        customers = Path(self.customers.name) if self.customers is not None else None
        return self.model_copy(update={"source": Path(self.source.name), "customers": customers})

    @property
    def table_attributes(self) -> tuple[str, ...]:
        """The attributes an attribute table supplies (those of a log not derived from it);
        when there are any, ``customers`` names the table (checked above)."""
        if self.kind != "transactions":
            return ()
        return tuple(c for c in self.attributes.columns() if c not in self.attributes.from_log)


ClvColumn = Literal["expected_purchases", "p_alive", "expected_spend", "clv"]
CLV_COLUMNS: tuple[ClvColumn, ...] = ("expected_purchases", "p_alive", "expected_spend", "clv")


class ClvSpec(_Frozen):
    """Predicted lifetime value from a transaction log (BG/NBD and Gamma-Gamma, fitted on the
    log up to the reference date): per customer ``expected_purchases`` over the horizon,
    ``p_alive`` (probability still active), ``expected_spend`` per order and ``clv``, the
    spend expected over the horizon discounted at ``discount_rate`` a year. Reported per
    segment; the columns in ``segment_on`` are features too (a value-based segmentation).
    """

    horizon_days: int = Field(365, ge=7)
    discount_rate: float = Field(0.10, ge=0, lt=1)
    segment_on: tuple[ClvColumn, ...] = ()


class FeatureSpec(_Frozen):
    """Preprocessing choices for the feature matrix."""

    categorical: tuple[str, ...] = ()
    log1p: Literal["auto", "none"] | tuple[str, ...] = "auto"
    skew_threshold: float = Field(1.0, gt=0)
    exclude: tuple[str, ...] = ()
    clv: ClvSpec | None = None


def _every_family() -> dict[FamilyName, dict[str, Dimension]]:
    """Every family, each with its default space."""
    return {name: {} for name in FAMILY_NAMES}


class SearchSpec(_Frozen):
    """The Optuna search: families and their spaces, budget and measurement sizes."""

    families: dict[FamilyName, dict[str, Dimension]] = Field(
        default_factory=_every_family, min_length=1
    )
    reduction: dict[str, Dimension] = Field(default_factory=dict)
    n_trials: int = Field(30, ge=1)
    timeout: float | None = Field(None, gt=0)
    seed: int = 0
    silhouette_sample: int = Field(5_000, ge=100)
    bootstrap_search: int = Field(5, ge=2)
    bootstrap_final: int = Field(20, ge=2)
    sample_size: int = Field(20_000, ge=1_000)
    """Above this many customers, trials, the scan and the pick fit and are measured on a seeded
    sample of this size (their bootstraps resample it: m out of n), and segment shares and value
    separation count every customer, assigned by the fitted model. Why 20,000: UMAP runs 500
    epochs up to 10,000 rows and 200 above, so a reducer trial and its refits (on about 63% of
    the rows) cost no more here than at 10,000 (``benchmarks/results/scale.md``)."""


class Constraints(_Frozen):
    """Actionability: segmentations outside these bounds are infeasible.

    The defaults ask for what marketing can act on: 3 to 8 segments (two is rarely more than
    "bought again or not"; beyond eight, few teams run distinct programmes), none under 3% of
    the customers. ``min_stability`` bounds the mean clusterwise bootstrap Jaccard: below 0.6
    Hennig (2007) reads segments as not to be trusted.
    """

    min_segments: int = Field(3, ge=2)
    max_segments: int = Field(8, ge=2)
    min_share: float = Field(0.03, ge=0, lt=1)
    max_noise_share: float = Field(0.25, ge=0, le=1)
    min_stability: float = Field(0.6, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> Constraints:
        if self.min_segments > self.max_segments:
            raise ValueError(
                f"min_segments ({self.min_segments}) exceeds max_segments ({self.max_segments})"
            )
        return self


class Gates(_Frozen):
    """What a challenger must show before it may replace the champion."""

    min_stability: float = Field(0.6, ge=0, le=1)
    min_share: float = Field(0.01, ge=0, lt=1)
    max_migration_share: float = Field(0.3, ge=0, le=1)
    max_quality_drop: float = Field(0.05, ge=0)


class Monitoring(_Frozen):
    """What ``segml score`` flags: emerging-segment candidates and drift.

    A candidate needs ``candidate_min_share`` of the batch and at least ``candidate_min_size``
    (never fewer than ``min_report_size``) customers, an RMS radius at most
    ``candidate_max_spread`` times the segments' median one, and a growth of at least
    ``candidate_min_growth``: novel customers must be that many times as common within its
    radius as training customers were (0 turns the check off).
    Drift defaults follow Evidently's: a two-sample test (KS, chi-square, z-test) at
    ``p_value`` when either sample has at most ``test_max_rows`` rows, else a distance
    (normed Wasserstein, Jensen-Shannon) at ``distance``; PSI levels 0.1 and 0.25.
    """

    candidate_min_share: float = Field(0.005, gt=0, lt=1)
    candidate_min_size: int = Field(50, ge=5)
    candidate_max_spread: float = Field(1.5, gt=0)
    candidate_min_growth: float = Field(3.0, ge=0)
    psi_moderate: float = Field(0.1, gt=0)
    psi_major: float = Field(0.25, gt=0)
    test_max_rows: int = Field(1_000, ge=1)
    p_value: float = Field(0.05, gt=0, lt=1)
    distance: float = Field(0.1, gt=0)
    drift_share: float = Field(0.5, gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> Monitoring:
        if self.psi_moderate > self.psi_major:
            raise ValueError(
                f"psi_moderate ({self.psi_moderate}) exceeds psi_major ({self.psi_major})"
            )
        return self


class RegistrySpec(_Frozen):
    """The registered model that versions of this experiment become."""

    model_name: str = Field(min_length=1)

    @field_validator("model_name")
    @classmethod
    def _mlflow_accepts(cls, name: str) -> str:
        # MLflow's own rule (checked when the first version registers, after every trial)
        if not name.strip() or name in {".", ".."} or any(c in name for c in "/:"):
            raise ValueError("MLflow refuses a model name that is blank, '.', '..' or has / or :")
        if "'" in name and '"' in name:  # a registry search filter can quote one kind only
            raise ValueError("a model name may hold ' or \", not both")
        return name


class Spec(_Frozen):
    """One segmentation experiment, as written in ``experiments/<name>.yaml``."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    question: str = ""
    data: DataSpec
    features: FeatureSpec = FeatureSpec()
    search: SearchSpec = SearchSpec()
    constraints: Constraints = Constraints()
    gates: Gates = Gates()
    monitoring: Monitoring = Monitoring()
    registry: RegistrySpec | None = None
    min_report_size: Annotated[int, Field(ge=1)] = 20
    path: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _clv_from_a_log(self) -> Spec:
        if self.features.clv is None:
            return self
        if self.data.kind != "transactions":
            raise ValueError("features.clv needs a transaction log (data.kind: transactions)")
        if self.data.outcomes.clv is not None:
            raise ValueError(
                "features.clv predicts the CLV that data.outcomes.clv names: declare one of them"
            )
        return self

    @property
    def model_name(self) -> str:
        """The registered model name (defaults to the experiment name)."""
        return self.registry.model_name if self.registry else self.name


MAX_SPEC_BYTES = 1 << 20
"""A spec is a page of YAML; a larger file is a mistake (or an attack), not a spec."""
MAX_SPEC_VALUES = 100_000
"""Values a spec may hold once its aliases are expanded: anchors for shared search spaces
are fine, an alias bomb (a few lines that expand to billions of values) is not."""


def load_spec(path: str | Path) -> Spec:
    """Read and validate an experiment spec; relative data paths resolve against its folder.

    Raises
    ------
    SpecError
        The file is missing, unreadable, too large, holds a duplicate key or a key that is
        unknown, mistyped or out of range; the message names the file and the dotted key.
    """
    path = Path(path)
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a spec is a YAML mapping of keys (got {type(raw).__name__})")
    try:
        spec = Spec.model_validate({**raw, "path": path})
    except ValidationError as exc:
        raise SpecError(_describe(path, exc)) from None
    _check_family_params(path, spec)
    return _resolve_paths(spec, path.parent)


def _read_yaml(path: Path) -> Any:
    """The YAML document in ``path``, refused when too large, too deep, expanding past
    ``MAX_SPEC_VALUES`` or holding a key twice (YAML would keep the last value silently)."""
    if path.is_dir():
        raise SpecError(f"{path}: is a folder, not a spec file")
    try:
        if path.stat().st_size > MAX_SPEC_BYTES:
            raise SpecError(f"{path}: larger than {MAX_SPEC_BYTES >> 20} MB; not a spec")
        loader = yaml.SafeLoader(path.read_text(encoding="utf-8"))
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_node(path, node)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except FileNotFoundError:
        raise SpecError(f"{path}: spec file not found") from None
    except RecursionError:
        raise SpecError(f"{path}: not a readable YAML spec (nested too deep)") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SpecError(f"{path}: not a readable YAML spec ({reason})") from None


def _check_node(path: Path, root: yaml.Node) -> None:
    """Refuse duplicate keys (with their dotted path and line) and alias expansions."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, key: str) -> int:
        if id(node) in sizes:  # an alias: the anchored node again, counted again
            return sizes[id(node)]
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for name, value in node.value:
                label = f"{key}.{name.value}" if key else str(name.value)
                if isinstance(name, yaml.ScalarNode) and name.value != "<<":
                    if name.value in seen:
                        line = name.start_mark.line + 1
                        raise SpecError(f"{path}: line {line}: duplicate key {label!r}")
                    seen.add(name.value)
                total += size(value, label)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item, key) for item in node.value)
        if total > MAX_SPEC_VALUES:
            raise SpecError(
                f"{path}: expands to more than {MAX_SPEC_VALUES:,} values through its aliases; "
                "not a spec"
            )
        sizes[id(node)] = total
        return total

    size(root, "")


def spec_digest(spec: Spec) -> str:
    """A short, stable digest of everything the spec says (not of where it was read from)."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _describe(path: Path, exc: ValidationError) -> str:
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif "input" in error and not isinstance(error["input"], dict):
        message += f" (got {reprlib.repr(error['input'])})"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{path}: {key}: {message}{more}"


def _check_family_params(path: Path, spec: Spec) -> None:
    from segml.families import FAMILIES, REDUCTION_SPACE

    for family, space in spec.search.families.items():
        unknown = set(space) - set(FAMILIES[family].default_space)
        if unknown:
            allowed = ", ".join(sorted(FAMILIES[family].default_space))
            raise SpecError(
                f"{path}: search.families.{family}.{sorted(unknown)[0]}: unknown key "
                f"(allowed: {allowed})"
            )
    unknown = set(spec.search.reduction) - set(REDUCTION_SPACE)
    if unknown:
        raise SpecError(
            f"{path}: search.reduction.{sorted(unknown)[0]}: unknown key "
            f"(allowed: {', '.join(sorted(REDUCTION_SPACE))})"
        )


def _resolve_paths(spec: Spec, base: Path) -> Spec:
    data = spec.data
    updates: dict[str, Path] = {"source": base / data.source}
    if data.customers is not None:
        updates["customers"] = base / data.customers
    return spec.model_copy(update={"data": data.model_copy(update=updates)})
