"""The README tells the truth: its set-up commands are the ones CI runs, every command is documented, its console
sessions run and print what it shows, and its "From Python" examples run.

Console sessions run in order in one fresh folder (the README's own session: the default store
``./kgexplain-store``, files it writes next to it), in process through Click's test runner. Each ``$ kgexplain ...``
line must exit as the README implies (an ``Error:`` line means a non-zero exit) and print the README's lines in
order (other lines, like status lines the README trims, may come between; stdout and stderr each keep their order).
Within a line, ``...`` stands for anything (also inside a word: ``.../x.png``), numbers may differ by 2 % (float
noise across machines), run ids differ (they hash where the data was written) and are carried from output into
later commands, and content hashes (64 hex digits) are not compared.
A console block preceded by ``<!-- console: not run (REASON) -->`` is left out, and must say why.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from kgexplain.cli.main import cli

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
SKIP = re.compile(r"<!-- console: not run \((.+?)\) -->\s*$")
RUN_ID = re.compile(r"\b(?:eg|aog|info|kp)-[a-z0-9-]+?-[0-9a-f]{8}\b")
SHA = re.compile(r"[0-9a-f]{64}")
NUMBER = re.compile(r"^[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?$")


def _command_after(marker: str) -> str:
    lines = README.splitlines()
    i = lines.index(marker)
    assert lines[i + 1].startswith("```")
    return lines[i + 2]


def test_readme_has_exactly_two_setup_commands_and_ci_reads_the_test_one() -> None:
    assert README.count("<!-- setup:") == 2
    main = _command_after("<!-- setup:main -->")
    assert "pip install" in main and "kgexplain build" in main
    test = _command_after("<!-- setup:test -->")
    assert "pytest" in test
    ci = (REPO / ".ci" / "run").read_text()
    assert "<!-- setup:test -->" in ci and "exit 1" in ci


# ---------------------------------------------------------------------------------------------------- commands
def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        yield (*prefix, name)
        if isinstance(cmd, click.Group):
            yield from _command_paths(cmd, (*prefix, name))


def _mentioned() -> set[tuple[str, ...]]:
    """Command paths the README names: ``kgexplain store init`` (or, in code spans, ``store init``), and each of
    ``kgexplain store init|upgrade``."""
    text = README.replace("\\|", "|")  # table cells escape the pipe
    spans = [m.group(1) for m in re.finditer(r"`([^`\n]+)`", text)]
    found: set[tuple[str, ...]] = set()
    for m in [
        *re.finditer(r"kgexplain ([a-z][a-z-]*)(?: ([a-z][a-z|-]*))?", text),
        *(re.match(r"(?:kgexplain )?([a-z][a-z-]*)(?: ([a-z][a-z|-]*))?", s) for s in spans),
    ]:
        if m is None:
            continue
        found.add((m.group(1),))
        for sub in (m.group(2) or "").split("|"):
            if sub:
                found.add((m.group(1), sub))
    return found


def test_every_command_and_subcommand_is_in_the_readme() -> None:
    missing = [" ".join(p) for p in _command_paths(cli) if p not in _mentioned()]
    assert not missing, f"commands the README does not mention: {missing}"


def test_the_mention_finder_sees_alternatives() -> None:
    assert {("store", "init"), ("runs",)} <= _mentioned()


# ---------------------------------------------------------------------------------------------------- sessions
@dataclass
class Step:
    args: list[str]
    expected: list[str]
    line: int  # in README.md


@dataclass
class Block:
    line: int
    section: str  # the README section ("## ...") it stands in
    steps: list[Step] = field(default_factory=list)
    skip: str | None = None


def console_blocks() -> list[Block]:
    lines = README.splitlines()
    blocks: list[Block] = []
    section = ""
    i = 0
    while i < len(lines):
        if lines[i].startswith("## "):
            section = lines[i][3:].strip()
        if lines[i].strip() == "```console":
            above = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            skip = SKIP.search(above)
            block = Block(i + 1, section, skip=skip.group(1) if skip else None)
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                if lines[i].startswith("$ "):
                    block.steps.append(Step(shlex.split(lines[i][2:], comments=True), [], i + 1))
                elif block.steps and lines[i].strip():
                    block.steps[-1].expected.append(lines[i])
                i += 1
            blocks.append(block)
        i += 1
    return blocks


def _tokens(line: str) -> list[str]:
    return SHA.sub("<sha>", line).split()


def _token_matches(want: str, got: str) -> bool:
    if want == got:
        return True
    if "..." in want:  # .../images/000148.png: a path ending so; (...: anything after "("
        return re.fullmatch(".*".join(re.escape(p) for p in want.split("...")), got) is not None
    w, g = want.rstrip(",;:)"), got.rstrip(",;:)")
    if NUMBER.match(w) and NUMBER.match(g) and want[len(w) :] == got[len(g) :]:
        a, b = float(w), float(g)
        return abs(a - b) <= 0.02 * abs(a) + 2e-3
    return False


def _line_matches(want: list[str], got: list[str]) -> bool:
    """Token lists match; ``...`` in ``want`` stands for any run of tokens."""
    if not want:
        return not got
    if want[0] == "...":
        return any(_line_matches(want[1:], got[k:]) for k in range(len(got) + 1))
    return bool(got) and _token_matches(want[0], got[0]) and _line_matches(want[1:], got[1:])


class Session:
    """Runs the README's console steps in order, carrying run ids from the output into later commands."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}  # README's run id -> this session's

    def _swap(self, text: str) -> str:
        return RUN_ID.sub(lambda m: self.ids.get(m.group(0), m.group(0)), text)

    def _learn_ids(self, want: str, got: str) -> None:
        for a, b in zip(RUN_ID.findall(want), RUN_ID.findall(got), strict=False):
            if a != b and a.rsplit("-", 1)[0] == b.rsplit("-", 1)[0]:
                self.ids.setdefault(a, b)

    def run(self, step: Step) -> None:
        args = [self._swap(a) for a in step.args]
        assert args and args[0] == "kgexplain", f"README line {step.line}: console sessions run only kgexplain"
        result = CliRunner().invoke(cli, args[1:], catch_exceptions=False)
        failing = any(w.startswith("Error:") for w in step.expected)
        assert (result.exit_code != 0) == failing, f"README line {step.line}: exit {result.exit_code}\n{result.output}"
        # stdout and stderr are captured apart: each keeps its order, and a README line may come from either
        streams = [[g for g in text.splitlines() if g.strip()] for text in (result.stdout, result.stderr)]
        at = [0, 0]
        for want in step.expected:
            if not self._find(want, streams, at):
                rest = [g for s, a in zip(streams, at, strict=True) for g in s[a:]]
                raise AssertionError(
                    f"README line {step.line} ({' '.join(args)}): expected\n  {want}\nin the output\n"
                    + "\n".join(f"  {g}" for g in rest)
                )

    def _find(self, want: str, streams: list[list[str]], at: list[int]) -> bool:
        for i, lines in enumerate(streams):
            for k in range(at[i], len(lines)):
                self._learn_ids(want, lines[k])
                if _line_matches(_tokens(self._swap(want)), _tokens(lines[k])):
                    at[i] = k + 1
                    return True
        return False


@pytest.fixture(scope="module")
def readme_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Session]]:
    """A fresh folder and session for the README's console sessions (the environment of a new user's shell)."""
    folder = tmp_path_factory.mktemp("readme")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.delenv("KGEXPLAIN_STORE", raising=False)
        mp.delenv("KGEXPLAIN_DEVICE", raising=False)
        mp.setenv("KGEXPLAIN_OFFLINE", "1")
        mp.setenv("TORCH_HOME", str(folder / ".torch"))
        yield folder, Session()


def _run_sections(session: Session, quickstart: bool) -> int:
    """Run the console blocks of the Quickstart (or of every other section), in README order."""
    steps = 0
    for block in console_blocks():
        if block.skip is None and (block.section == "Quickstart") == quickstart:
            for step in block.steps:
                session.run(step)
                steps += 1
    return steps


@pytest.fixture(scope="module")
def quickstart(readme_folder: tuple[Path, Session]) -> Path:
    folder, session = readme_folder
    assert _run_sections(session, quickstart=True) >= 5
    return folder


@pytest.fixture(scope="module")
def session_dir(quickstart: Path, readme_folder: tuple[Path, Session]) -> Path:
    """The folder once every console session of the README has run in it, in order."""
    assert _run_sections(readme_folder[1], quickstart=False) >= 3
    return quickstart


def test_the_quickstart_session_prints_what_the_readme_shows(quickstart: Path) -> None:
    assert (quickstart / "kgexplain-store" / "graph.lbdb").is_file()


def test_the_other_sessions_print_what_the_readme_shows(session_dir: Path) -> None:
    assert (session_dir / "my-birds" / "annotations.json").is_file()


def test_a_console_block_left_out_says_why() -> None:
    blocks = console_blocks()
    assert blocks and any(b.skip is None and b.steps for b in blocks)
    for b in blocks:
        assert b.skip is None or len(b.skip) > 10, f"README line {b.line}: say why the session is not run"


def test_the_line_matcher() -> None:
    assert _line_matches(_tokens("a 1.00 ... z"), _tokens("a 1.01 b c z"))
    assert not _line_matches(_tokens("a 1.00 z"), _tokens("a 1.10 z"))
    assert _line_matches(_tokens("x in ... s"), _tokens("x in 3.2 s"))
    assert _line_matches(_tokens("i .../images/1.png 2"), _tokens("i /tmp/a/images/1.png 2"))
    assert not _line_matches(_tokens("i .../images/1.png 2"), _tokens("i /tmp/a/images/2.png 2"))
    s = Session()
    s._learn_ids("run eg-toynet-bird-2dab0fc0 ok", "run eg-toynet-bird-1234abcd ok")
    assert s._swap("show eg-toynet-bird-2dab0fc0/conv4_2/f1/p2") == "show eg-toynet-bird-1234abcd/conv4_2/f1/p2"


# ---------------------------------------------------------------------------------------------------- Python
def python_examples() -> list[str]:
    """The ```python blocks of the README's "From Python" section, in order."""
    start = README.index("\n## From Python")
    end = README.index("\n## ", start + 5)
    return re.findall(r"```python\n(.*?)```", README[start:end], re.S)


def test_the_from_python_examples_run(session_dir: Path) -> None:
    examples = python_examples()
    jobs = ("run_build", "run_learn", "run_localize", "run_info", "run_decoders", "run_kp")
    assert all(f"{job}(" in "".join(examples) for job in jobs), "an example per job"
    namespace: dict[str, object] = {}
    cwd = os.getcwd()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(session_dir)
        mp.delenv("KGEXPLAIN_STORE", raising=False)
        for code in examples:
            exec(compile(code, "README.md (From Python)", "exec"), namespace)
    assert os.getcwd() == cwd
