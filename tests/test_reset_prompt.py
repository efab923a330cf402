"""``stet.reset(store)`` asks first in a notebook (SPEC S2).

A Jupyter kernel's stdin is not a terminal, yet someone is there to answer: the
question goes to the notebook through the kernel's stdin channel. These tests start a
real IPython kernel and answer its ``input_request`` as a notebook front end does.
A script without a terminal is not asked anything, as before.
"""

from __future__ import annotations

import queue
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _helpers import PYTHON, child_env
from stet.backends import get_backend

jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")


class Notebook:
    """A running IPython kernel, driven like a notebook front end."""

    def __init__(self, cwd: Path) -> None:
        self.manager = jupyter_client.KernelManager(kernel_name="python3")
        # The kernel must import the stet under test (child_env puts it first).
        self.manager.start_kernel(env=child_env(), cwd=str(cwd))
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def run(self, code: str, answer: str | None = None) -> tuple[list[str], list[str], str]:
        """Run a cell; answer a question with ``answer``.

        Returns:
            ``(prompts, output, status)``: the questions asked, the text printed and the
            cell's status (``ok`` or ``error``).
        """
        client = self.client
        msg_id = client.execute(code, allow_stdin=True)
        prompts: list[str] = []
        output: list[str] = []
        deadline = time.monotonic() + 60
        idle = False
        while not idle:
            assert time.monotonic() < deadline, f"the cell did not finish: {output}"
            try:
                request = client.stdin_channel.get_msg(timeout=0.05)
            except queue.Empty:
                pass
            else:
                if request["msg_type"] == "input_request":
                    prompts.append(request["content"]["prompt"])
                    assert answer is not None, f"an unexpected question: {prompts[-1]!r}"
                    client.input(answer)
            try:
                message: dict[str, Any] = client.iopub_channel.get_msg(timeout=0.05)
            except queue.Empty:
                continue
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                output.append(content["text"])
            elif kind == "error":
                output.append("\n".join(content["traceback"]))
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True
        reply = client.get_shell_msg(timeout=30)
        assert reply["parent_header"]["msg_id"] == msg_id
        return prompts, "".join(output).splitlines(), reply["content"]["status"]

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Notebook]:
    kernel = Notebook(tmp_path_factory.mktemp("notebook"))
    yield kernel
    kernel.close()


def _two_runs(store: Path) -> None:
    backend = get_backend(store)
    backend.record({"alpha": 0.1})
    backend.record({"alpha": 0.2})


def test_the_kernel_imports_the_stet_under_test(notebook: Notebook) -> None:
    import stet

    _, output, status = notebook.run("import stet; print(stet.__file__)")
    assert status == "ok"
    assert output == [stet.__file__]


@pytest.mark.timeout(120)
def test_reset_in_a_notebook_asks_and_no_keeps_the_store(
    notebook: Notebook, tmp_path: Path, ext: str
) -> None:
    store = tmp_path / f"runs{ext}"
    _two_runs(store)
    prompts, output, status = notebook.run(f"import stet; stet.reset({str(store)!r})", "n")
    assert status == "ok", output
    assert prompts == [f"[stet] Remove all 2 records from {store}? [y/N] "]
    assert output == ["[stet] Aborted."]
    assert len(get_backend(store).load()) == 2


@pytest.mark.timeout(120)
def test_reset_in_a_notebook_asks_and_yes_clears_the_store(
    notebook: Notebook, tmp_path: Path, ext: str
) -> None:
    store = tmp_path / f"runs{ext}"
    _two_runs(store)
    prompts, output, status = notebook.run(f"import stet; stet.reset({str(store)!r})", "y")
    assert status == "ok", output
    assert prompts == [f"[stet] Remove all 2 records from {store}? [y/N] "]
    assert output == [f"[stet] Store cleared: {store}"]
    assert get_backend(store).load() == []


def test_reset_with_yes_in_a_notebook_does_not_ask(notebook: Notebook, tmp_path: Path) -> None:
    store = tmp_path / "runs.csv"
    _two_runs(store)
    prompts, output, status = notebook.run(f"import stet; stet.reset({str(store)!r}, yes=True)")
    assert (prompts, output, status) == ([], [f"[stet] Store cleared: {store}"], "ok")
    assert not store.exists()


@pytest.mark.parametrize("stdin", ["pipe", "devnull"])
def test_a_script_without_a_terminal_is_not_asked(tmp_path: Path, stdin: str) -> None:
    """As before: a script whose stdin is a pipe or nothing clears the store at once,
    and never reads its stdin (the "n" piped in stays unread)."""
    store = tmp_path / "runs.json"
    _two_runs(store)
    code = (
        "import sys, stet\n"
        f"stet.reset({str(store)!r})\n"
        "print('left on stdin:', repr(sys.stdin.read()))\n"
    )
    out = subprocess.run(
        [PYTHON, "-c", code],
        input="n\n" if stdin == "pipe" else None,
        stdin=subprocess.DEVNULL if stdin == "devnull" else None,
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    left = "'n\\n'" if stdin == "pipe" else "''"
    assert out.stdout.splitlines() == [f"[stet] Store cleared: {store}", f"left on stdin: {left}"]
    assert not store.exists()
