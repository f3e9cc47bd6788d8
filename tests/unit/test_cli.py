"""The command line's own behaviour (the commands are exercised end to end in tests/e2e)."""
from __future__ import annotations

import io
import logging
import re

import pytest

from apache_md import cli


@pytest.fixture
def root_level():
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


@pytest.mark.parametrize("conf,verbose,level", [
    ("<IfModule md_module>\nLogLevel warn md:warn\n</IfModule>\n", False, logging.WARNING),
    ("<IfModule md_module>\nLogLevel md:trace1\n</IfModule>\n", False, logging.DEBUG),
    ("<IfModule md_module>\nLogLevel md:error\n</IfModule>\n", True, logging.DEBUG),  # -v wins
    ("LogLevel warn\n", False, logging.INFO),
])
def test_loglevel_md_sets_apache_mds_level(tmp_path, root_level, conf, verbose, level):
    main = tmp_path / "apache2.conf"
    main.write_text(conf)
    args = cli.build_parser().parse_args(["-f", str(main), "-d", str(tmp_path)]
                                         + (["-v"] if verbose else []) + ["check"])
    logging.getLogger().setLevel(logging.CRITICAL)  # whatever a previous load set
    cli._loader(args)()
    assert logging.getLogger().level == level


def test_renew_progress_bar():
    out = io.StringIO()
    bar = cli.ProgressBar(out)
    bar.start(4)
    assert bar.line() == "[" + "." * 30 + "] 0/4 done"
    bar.count(True)
    bar.count(False)
    assert bar.line() == "[" + "#" * 15 + "." * 15 + "] 2/4 done, 1 failed"
    assert out.getvalue().endswith("\r" + bar.line())


def test_renews_lines_from_many_threads_stay_whole(monkeypatch):
    """The drive threads' progress lines: each one whole on its own line, even when the
    output lets another thread in between two writes (a pipe, a slow terminal)."""
    import threading
    import time

    class Slow:
        def __init__(self):
            self.text = ""

        def write(self, s):
            self.text += s
            time.sleep(0.001)  # another thread's turn
            return len(s)

        def flush(self):
            pass

    out = Slow()
    monkeypatch.setattr(cli.sys, "stdout", out)
    threads = [threading.Thread(target=lambda n=n: [cli._say(f"md{n}: step {i}") for i in range(20)])
               for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = out.text.splitlines()
    assert len(lines) == 80 and all(re.fullmatch(r"md\d: step \d+", x) for x in lines), lines
