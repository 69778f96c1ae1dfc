"""The README's two set-up commands are the ones CI runs."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _command_after(marker: str) -> str:
    lines = (REPO / "README.md").read_text().splitlines()
    i = lines.index(marker)
    assert lines[i + 1].startswith("```")
    return lines[i + 2]


def test_readme_has_exactly_two_setup_commands_and_ci_reads_the_test_one() -> None:
    text = (REPO / "README.md").read_text()
    assert text.count("<!-- setup:") == 2
    main = _command_after("<!-- setup:main -->")
    assert "pip install" in main and "kgexplain build" in main
    test = _command_after("<!-- setup:test -->")
    assert "pytest" in test
    ci = (REPO / ".ci" / "run").read_text()
    assert "<!-- setup:test -->" in ci and "exit 1" in ci
