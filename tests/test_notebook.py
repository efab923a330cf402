"""Notebooks (SPEC S6 "Introspection"): status as HTML, a useful repr, logging, a real kernel.

``stet.status`` returns a `stet.Status`: a script prints its lines as stet always did,
Jupyter shows its ``_repr_html_``. The last test builds a notebook with nbformat and
runs it in a real IPython kernel with nbclient, with this checkout's stet importable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

import stet
from _helpers import PYTHON, STET_DIR, child_env

HOST = socket.gethostname()


class _Tables(HTMLParser):
    """The rows of every table in an HTML snippet, as lists of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None
        self.progress: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = self.tables.setdefault(dict(attrs).get("class") or "", [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("th", "td"):
            self._cell = []
        elif tag == "progress":
            self.progress.append(dict(attrs))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("th", "td") and self._cell is not None and self._table is not None:
            self._table[-1].append("".join(self._cell).strip(" \t\n"))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables_of(html: str) -> _Tables:
    parser = _Tables()
    parser.feed(html)
    parser.close()
    return parser


def summary_rows(html: str) -> dict[str, str]:
    """The status table of ``Status._repr_html_`` as {heading: value}."""
    return {row[0]: row[1] for row in tables_of(html).tables["stet-status"]}


@pytest.fixture
def sweep(tmp_path: Path) -> stet.OnceFunction[..., None]:
    """``train`` on runs.csv: 4 runs completed, 3 failures of 2 runs."""

    @stet.once(tmp_path / "runs.csv", quiet=True)
    def train(alpha: float, seed: int) -> None:
        if seed == 2:
            raise ValueError("diverged")

    for attempt in range(2):
        for alpha in (0.1, 0.2):
            for seed in (0, 1, 2):
                if attempt and alpha == 0.2:
                    continue
                with contextlib.suppress(ValueError):
                    train(alpha, seed)
    return train


# -- Status: lines in a script, HTML in Jupyter ------------------------------------------


SCRIPT = """
import stet

@stet.once("runs.csv", quiet=True)
def train(alpha, seed):
    pass

train(0.1, 1)
train(0.2, 1)
stet.status("runs.csv")
"""


def test_status_in_a_script_prints_the_lines_as_before(tmp_path: Path) -> None:
    (tmp_path / "sweep.py").write_text(SCRIPT, encoding="utf-8")
    out = subprocess.run(
        [PYTHON, "sweep.py"],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    last = str(stet.load(tmp_path / "runs.csv")["_stet_timestamp"].max().isoformat())
    assert out.stdout.splitlines() == [
        "[stet] Store: runs.csv",
        "[stet] 2 completed experiments recorded",
        f"[stet] Last run: {last}",
        "[stet] Key columns: alpha, seed",
    ]


def test_status_text_is_its_lines(sweep: stet.OnceFunction[..., None]) -> None:
    summary = stet.status(sweep.store)
    assert str(summary) == "\n".join(summary.lines())
    assert repr(summary) == str(summary)
    assert (
        summary.lines()[1] == "[stet] 4 completed experiments recorded, 3 failed (2 distinct runs)"
    )


def test_status_type_is_public(sweep: stet.OnceFunction[..., None]) -> None:
    assert isinstance(stet.status(sweep.store), getattr(stet, "Status", ()))


def test_status_html_has_the_counts(sweep: stet.OnceFunction[..., None]) -> None:
    summary = stet.status(sweep.store)
    rows = summary_rows(summary._repr_html_())
    assert rows["Store"] == sweep.store
    assert rows["Completed"] == "4"
    assert rows["Failed"] == "3 (2 distinct runs)"
    assert rows["Last run"] == summary.last_run
    assert rows["Key columns"] == "alpha, seed"
    assert "Progress" not in rows


def test_status_html_with_a_grid_has_a_progress_bar(sweep: stet.OnceFunction[..., None]) -> None:
    summary = stet.status(sweep.store, grid={"alpha": [0.1, 0.2], "seed": [0, 1, 2, 3]})
    html = summary._repr_html_()
    rows = summary_rows(html)
    assert rows["Progress"] == "4 / 8 (50.0%)"
    assert tables_of(html).progress == [{"value": "4", "max": "8"}]
    assert rows["ETA"].endswith(" s per run)")


def test_status_html_counts_runs_per_function(tmp_path: Path) -> None:
    store = tmp_path / "runs.sqlite"

    @stet.once(store, quiet=True)
    def prepare(dataset: str) -> None:
        pass

    @stet.once(store, quiet=True)
    def train(dataset: str, seed: int) -> None:
        pass

    prepare("mnist")
    train("mnist", 0)
    train("mnist", 1)
    rows = summary_rows(stet.status(store)._repr_html_())
    assert rows["Completed"] == "3"
    assert (rows["\xa0\xa0prepare"], rows["\xa0\xa0train"]) == ("1", "2")


@pytest.fixture
def held(tmp_path: Path) -> Iterator[str]:
    """A store where this process is running ``train(tag="<b>x</b>", seed=3)``."""
    store = str(tmp_path / "runs.json")
    started, release = threading.Event(), threading.Event()

    @stet.once(store, claim=True, lease=600, quiet=True)
    def train(tag: str, seed: int) -> None:
        if seed == 3:
            started.set()
            release.wait(60)

    train("<b>x</b>", 1)  # one completed run
    worker = threading.Thread(target=train, args=("<b>x</b>", 3))
    worker.start()
    assert started.wait(60)
    try:
        yield store
    finally:
        release.set()
        worker.join(60)


def test_status_html_lists_runs_in_progress_with_their_host(held: str) -> None:
    html = stet.status(held)._repr_html_()
    running = tables_of(html).tables["stet-running"]
    assert running[0][:2] == ["run", "worker"]
    [(run, worker, _)] = running[1:]  # (the third column: see the test below)
    assert run == "tag='<b>x</b>', seed=3"
    assert worker == f"{HOST} (pid {os.getpid()})"
    assert "<b>x</b>" not in html  # values are escaped, never markup


def test_status_html_shows_how_long_a_run_has_been_running(held: str) -> None:
    time.sleep(2.2)
    html = stet.status(held)._repr_html_()
    running = tables_of(html).tables["stet-running"]
    assert running[0] == ["run", "worker", "running for"]
    assert re.fullmatch(r"0m 0[2-9]s", running[1][2])


def test_status_html_escapes_the_store_path(tmp_path: Path) -> None:
    folder = tmp_path / "a<b>&c"
    folder.mkdir()

    @stet.once(folder / "runs.csv", quiet=True)
    def train(seed: int) -> None:
        pass

    train(1)
    html = stet.status(folder / "runs.csv")._repr_html_()
    assert "a&lt;b&gt;&amp;c" in html
    assert summary_rows(html)["Store"] == str(folder / "runs.csv")


# -- the decorated function's repr -----------------------------------------------------


def test_repr_shows_store_key_and_completed_count(sweep: stet.OnceFunction[..., None]) -> None:
    assert repr(sweep) == f"<stet.once train(alpha, seed) store={sweep.store} 4 completed>"


def test_repr_of_a_function_with_ignored_parameters_shows_its_key(tmp_path: Path) -> None:
    @stet.once(tmp_path / "runs.parquet", ignore=["verbose", "device"], quiet=True)
    def fit(lr: float, seed: int, verbose: bool = False, device: str = "cpu") -> None:
        pass

    fit(0.1, 0)
    fit(0.1, 1, verbose=True)
    assert repr(fit) == f"<stet.once fit(lr, seed) store={tmp_path / 'runs.parquet'} 2 completed>"


def test_repr_of_a_postgres_store_hides_the_password(postgres_url: str) -> None:
    url = postgres_url.replace("postgres@", "postgres:s3cret@", 1)

    @stet.once(url, quiet=True)
    def train(seed: int) -> None:
        pass

    train(1)
    text = repr(train)
    assert "s3cret" not in text
    assert text.endswith(" 1 completed>")


def test_repr_counts_only_this_functions_runs(tmp_path: Path) -> None:
    store = tmp_path / "runs.csv"

    @stet.once(store, quiet=True)
    def prepare(dataset: str) -> None:
        pass

    @stet.once(store, quiet=True)
    def train(dataset: str, seed: int) -> None:
        pass

    prepare("mnist")
    prepare("cifar10")
    train("mnist", 0)
    assert repr(prepare).endswith(" 2 completed>")
    assert repr(train).endswith(" 1 completed>")


# -- messages go to the logger named "stet" ------------------------------------------


def test_messages_go_to_the_stet_logger(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO, logger="stet")

    @stet.once(tmp_path / "runs.csv", max_attempts=1)
    def train(seed: int) -> None:
        if seed == 99:
            raise ValueError("diverged")

    for _ in range(2):
        for seed in range(12):
            train(seed)
    with pytest.raises(ValueError):
        train(99)
    train(99)
    printed = [line.removeprefix("[stet] ") for line in capsys.readouterr().out.splitlines()]
    records = [r for r in caplog.records if r.name == "stet"]
    assert [r.getMessage() for r in records] == printed  # every line printed is logged
    assert all(r.levelno == logging.INFO for r in records)
    assert printed[0] == f"train: store {tmp_path / 'runs.csv'} (new, nothing recorded yet)"
    assert printed[1:11] == [f"Skipping train(seed={seed})" for seed in range(10)]
    assert printed[11].startswith("Skipping more completed runs of train without a line each")


def test_quiet_logs_nothing_either(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="stet")

    @stet.once(tmp_path / "runs.csv", quiet=True)
    def train(seed: int) -> None:
        pass

    train(1)
    train(1)
    assert [r for r in caplog.records if r.name == "stet"] == []


LOGGED = """
import logging
import stet

logging.basicConfig(
    filename="stet.log", level=logging.INFO, format="%(name)s %(levelname)s %(message)s"
)

@stet.once("runs.csv")
def train(seed):
    pass

for seed in (1, 2, 1):
    train(seed)
"""


def test_the_summary_line_is_logged_at_exit(tmp_path: Path) -> None:
    (tmp_path / "sweep.py").write_text(LOGGED, encoding="utf-8")
    subprocess.run([PYTHON, "sweep.py"], cwd=tmp_path, env=child_env(), check=True, timeout=120)
    lines = (tmp_path / "stet.log").read_text(encoding="utf-8").splitlines()
    assert lines[-1] == "stet INFO train: 2 ran, 1 skipped"
    assert lines[1] == "stet INFO Skipping train(seed=1)"


def test_reset_messages_go_to_the_stet_logger(
    sweep: stet.OnceFunction[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="stet")
    stet.reset(sweep.store, {"alpha": 0.1, "seed": 0})
    assert [r.getMessage() for r in caplog.records if r.name == "stet"] == [
        "Removed entry: {'alpha': 0.1, 'seed': 0}"
    ]


# -- a real notebook -----------------------------------------------------------------

CELLS = [
    # 0: the kernel imports this checkout's stet (PYTHONPATH of the kernel's environment)
    "import stet\nprint(stet.__file__)",
    # 1: a sweep with failures
    """\
import contextlib

@stet.once("runs.csv", quiet=True)
def train(alpha, seed):
    if seed == 2:
        raise ValueError("diverged")

for alpha in (0.1, 0.2):
    for seed in (0, 1, 2):
        with contextlib.suppress(ValueError):
            train(alpha, seed)""",
    # 2: the status, as the cell's result
    'stet.status("runs.csv")',
    # 3: the function's repr
    "train",
    # 4: a progress bar over the pending points, without list()
    """\
from tqdm.auto import tqdm

grid = {"alpha": [0.1, 0.2, 0.3], "seed": [0, 1, 2]}
todo = train.pending(grid)
bar = tqdm(todo)
for point in bar:
    with contextlib.suppress(ValueError):
        train(**point)
bar.close()
print(len(todo), bar.total, bar.n)""",
    # 5: clearing the store asks first: the kernel has no stdin here, so input() raises
    'stet.reset("runs.csv")',
    # 6: nothing was removed
    'print(len(stet.load("runs.csv")))',
]


def _run_notebook(work: Path) -> Any:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    client = nbclient.NotebookClient(
        notebook,
        timeout=60,
        startup_timeout=60,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(work)}},
    )
    try:
        client.execute(env=child_env(), cwd=str(work))
    except (RuntimeError, TimeoutError, OSError) as exc:
        if client.kc is None or not notebook.cells[0].get("outputs"):
            pytest.skip(f"no IPython kernel could start here: {type(exc).__name__}: {exc}")
        raise
    nbformat.validate(notebook)
    return notebook


def _text(cell: Any) -> str:
    """What a cell printed to stdout."""
    return "".join(
        o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == "stdout"
    )


@pytest.mark.timeout(120)
def test_a_real_notebook(tmp_path: Path) -> None:
    started = time.monotonic()
    notebook = _run_notebook(tmp_path)
    cells = notebook.cells
    assert _text(cells[0]).strip() == str(STET_DIR / "stet" / "__init__.py")

    [status] = [o for o in cells[2].outputs if o.output_type == "execute_result"]
    assert _text(cells[2]) == ""  # shown as the result, not printed as well
    rows = summary_rows(status.data["text/html"])
    assert (rows["Completed"], rows["Failed"]) == ("4", "2 (2 distinct runs)")
    assert status.data["text/plain"].splitlines()[1] == (
        "[stet] 4 completed experiments recorded, 2 failed (2 distinct runs)"
    )

    [function] = [o for o in cells[3].outputs if o.output_type == "execute_result"]
    store = tmp_path / "runs.csv"
    assert (
        function.data["text/plain"] == f"<stet.once train(alpha, seed) store={store} 4 completed>"
    )

    assert _text(cells[4]).split() == ["5", "5", "5"]  # len(pending), tqdm's total, bar.n

    [error] = [o for o in cells[5].outputs if o.output_type == "error"]
    assert error.ename == "StdinNotImplementedError"  # stet asked before clearing
    assert _text(cells[6]).strip() == "6"
    assert time.monotonic() - started < 60
