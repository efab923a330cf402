"""What the benchmark measures, how much of it (full or quick), and the targets.

The targets of the spec (S8, as revised by the issue "Speed to the floor") live here and
nowhere else: `TARGETS`. Skip and record costs are judged against a hand-written floor
measured in the same run (see `floor`), so a slow or busy machine moves both sides.

Every benchmark function is a no-op. Record ``i`` of a filled store is the run with
``a = i // SEEDS`` (or ``alpha = a / 8`` for the README-style function) and
``seed = i % SEEDS``; new runs use ``a >= NEW_A``, which no filled store contains.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

FILE_STORES = ("csv", "json", "sqlite", "parquet")
PG = "postgres"
LABELS = {
    "csv": "CSV",
    "json": "JSON",
    "sqlite": "SQLite",
    "parquet": "Parquet",
    PG: "PostgreSQL",
}
COLORS = {
    "csv": "tab:blue",
    "json": "tab:orange",
    "sqlite": "tab:green",
    "parquet": "tab:red",
    PG: "tab:purple",
}
MARKERS = {"csv": "o", "json": "s", "sqlite": "^", "parquet": "D", PG: "v"}

# The three call styles of the skip path. "readme" is ``train(alpha, seed, epochs=10)``
# decorated with ``key=["alpha", "seed"]`` and called as ``train(alpha, seed)``.
STYLES = ("positional", "keyword", "readme")
STYLE_LABELS = {
    "positional": "f(a, seed)",
    "keyword": "f(a=.., seed=..)",
    "readme": "train(alpha, seed)",
}
NAMES_F = ("a", "seed")
NAMES_TRAIN = ("alpha", "seed")

SEEDS = 10
NEW_A = 10**9
MILLION = 1_000_000
HEAVY = ("pandas", "pyarrow", "psycopg")  # must not load with ``import stet`` (S8)
ALSO_WATCHED = ("numpy", "sqlite3", "filelock")  # reported, no target


def point(names: tuple[str, ...], i: int) -> tuple[Any, ...]:
    """The argument values of record ``i`` for a function with key ``names``."""
    a, seed = divmod(i, SEEDS)
    return (a / 8 if names[0] == "alpha" else a, seed)


def new_point(names: tuple[str, ...], j: int) -> tuple[Any, ...]:
    """The ``j``-th run that no filled store holds."""
    return point(names, (NEW_A + j) * SEEDS)


def grid_span(points: int) -> tuple[int, int]:
    """The ``a`` range of a ``points``-point grid (``a`` x ``seed``) of which a store
    of ``points`` records holds exactly half."""
    a_count = points // SEEDS
    return a_count // 2, a_count // 2 + a_count


# The benchmark functions: no-ops that count their calls (so a skip that ran the body
# is caught). `FUNCS` gives each one's key names and the ``key=`` it is decorated with.
CALLS = [0]


def f(a: Any, seed: Any) -> None:
    CALLS[0] += 1


def train(alpha: Any, seed: Any, epochs: int = 10) -> None:
    CALLS[0] += 1


FUNCS: dict[str, tuple[Any, tuple[str, ...], list[str] | None]] = {
    "f": (f, NAMES_F, None),
    "train": (train, NAMES_TRAIN, ["alpha", "seed"]),
}


@dataclass(frozen=True)
class Targets:
    """S8 targets. Ratios are stet's median over the floor's median in the same run."""

    skip_ratio: dict[str, float] = field(
        default_factory=lambda: {"csv": 1.5, "json": 1.5, "parquet": 1.5, "sqlite": 2.0}
    )
    # "Flat": the value at the largest size over the value at the smallest, at most this.
    # Skip flatness is judged on the ratio to the floor (the floor's own dict grows too),
    # counted from parity where stet beat the floor at the smallest size; record
    # flatness on microseconds.
    flat: float = 1.3
    record_us: dict[str, float] = field(
        default_factory=lambda: {"csv": 30.0, "json": 30.0, "sqlite": 60.0}
    )
    parquet_amortised_us: float = 200.0
    cold_s: float = 0.5  # first call on a 1,000,000-record store, every file store
    index_bytes: float = 100.0  # RSS growth per record of the loaded index
    pending_dict_s: float = 0.5  # 1,000,000-point grid, dict of lists
    pending_list_s: float = 1.5  # list of tuples, list of dicts
    import_ms: float = 100.0
    # 8 workers walking one grid in the same order: wall time over the ideal.
    same_grid_factor: dict[str, float] = field(
        default_factory=lambda: {"sqlite": 2.0, PG: 2.0, "csv": 3.0, "json": 3.0}
    )


TARGETS = Targets()


@dataclass(frozen=True)
class Plan:
    """How much to measure: the full run or the quick smoke run."""

    name: str
    sizes: tuple[int, ...]  # skip and record path, cold start
    big: int  # cold start, memory and pending (the targets speak of 1,000,000)
    rounds: int  # floor/stet alternations per measurement
    skip_calls: int  # per round, per side
    warmup: int
    record_calls: int  # per round, per side (in-process record path)
    amortised_calls: int  # new records per child process (CSV, JSON, SQLite)
    parquet_amortised_calls: int
    amortised_limit_s: float  # a child stops recording after this long
    cold_repeats: int  # fresh processes after the first and second (each times pending)
    amortised_repeats: int  # fresh processes recording new runs, per store; the median
    import_repeats: int
    sweep_a: int  # the sweep is sweep_a x SEEDS points
    pg_sizes: tuple[int, ...]  # PostgreSQL skip/record sizes
    pg_pending: int  # PostgreSQL pending grid points (filling 1M rows is slow)
    claim_keys: int  # no-op claimed runs per throughput scenario
    claim_workers: tuple[int, ...]
    same_grid_keys: int
    same_grid_workers: int
    same_grid_body_s: float
    delay_one_way_s: float  # PostgreSQL through the proxy: added delay each direction
    delay_workers: tuple[int, ...]
    joblib_entries: int
    joblib_hits: int
    joblib_misses: int
    diskcache_entries: int
    diskcache_hits: int
    diskcache_misses: int

    @property
    def pending_processes(self) -> int:
        """Fresh processes that time ``pending``: every cold start's but the first."""
        return 1 + self.cold_repeats

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


FULL = Plan(
    name="full",
    sizes=(1_000, 10_000, 100_000, MILLION),
    big=MILLION,
    rounds=20,
    skip_calls=250,
    warmup=200,
    record_calls=50,
    amortised_calls=2_000,
    parquet_amortised_calls=300,
    amortised_limit_s=60.0,
    cold_repeats=3,
    amortised_repeats=3,
    import_repeats=7,
    sweep_a=1_000,
    pg_sizes=(1_000, 10_000, 100_000),
    pg_pending=MILLION,
    claim_keys=400,
    claim_workers=(1, 2, 4, 8),
    same_grid_keys=400,
    same_grid_workers=8,
    same_grid_body_s=0.020,
    delay_one_way_s=0.0005,
    delay_workers=(1, 8),
    joblib_entries=1_000,
    joblib_hits=1_000,
    joblib_misses=200,
    diskcache_entries=10_000,
    diskcache_hits=2_000,
    diskcache_misses=1_000,
)

QUICK = Plan(
    name="quick",
    sizes=(1_000, 10_000, 100_000),
    big=100_000,
    rounds=8,
    skip_calls=125,
    warmup=50,
    record_calls=25,
    amortised_calls=200,
    parquet_amortised_calls=25,
    amortised_limit_s=15.0,
    cold_repeats=0,
    amortised_repeats=1,
    import_repeats=3,
    sweep_a=50,
    pg_sizes=(1_000, 10_000),
    pg_pending=50_000,
    claim_keys=60,
    claim_workers=(1, 8),
    same_grid_keys=120,
    same_grid_workers=8,
    same_grid_body_s=0.020,
    delay_one_way_s=0.0005,
    delay_workers=(1, 8),
    joblib_entries=100,
    joblib_hits=200,
    joblib_misses=50,
    diskcache_entries=1_000,
    diskcache_hits=500,
    diskcache_misses=200,
)
