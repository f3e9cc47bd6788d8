"""pyflakes over the code, the tests and the benchmarks: an unused import or name, an
undefined one, a shadowed import. A line that says `noqa` is meant (a re-export, a
pytest fixture imported for its name), and so is a later redefinition of what it
imports (the fixture as a test's parameter)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

pyflakes_api = pytest.importorskip("pyflakes.api")
from pyflakes import reporter as pyflakes_reporter  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TREES = ("apache_md", "tests", "bench")
_REDEFINED = re.compile(r"redefinition of unused '[^']+' from line (\d+)")


class _Collect(pyflakes_reporter.Reporter):
    def __init__(self) -> None:
        self.found: list[tuple[str, int, str]] = []

    def unexpectedError(self, filename, msg):  # noqa: N802 - pyflakes' names
        self.found.append((filename, 0, str(msg)))

    def syntaxError(self, filename, msg, lineno, offset, text):  # noqa: N802
        self.found.append((filename, lineno or 0, f"syntax error: {msg}"))

    def flake(self, message):
        self.found.append((message.filename, message.lineno, message.message % message.message_args))


def _meant(lines: list[str], lineno: int, text: str) -> bool:
    if 0 < lineno <= len(lines) and "noqa" in lines[lineno - 1]:
        return True
    m = _REDEFINED.match(text)
    return bool(m) and "noqa" in lines[int(m.group(1)) - 1]


def problems(paths: list[Path]) -> list[str]:
    out = []
    for path in paths:
        rep = _Collect()
        source = path.read_text()
        pyflakes_api.check(source, str(path), rep)
        lines = source.splitlines()
        name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
        out += [f"{name}:{n}: {t}" for _, n, t in rep.found
                if not _meant(lines, n, t)]
    return out


def test_pyflakes_finds_nothing():
    paths = sorted(p for tree in TREES for p in (ROOT / tree).rglob("*.py"))
    assert paths
    found = problems(paths)
    assert not found, "\n".join(found)


def test_the_check_finds_an_unused_import(tmp_path):
    bad = tmp_path / "probe.py"
    bad.write_text("import os\nimport sys  # noqa: F401\n")
    assert problems([bad]) == ["probe.py:1: 'os' imported but unused"]
