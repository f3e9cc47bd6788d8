"""A sample of the directive sweep (tests/e2e/directive_sweep.py): the same small
configurations read by Debian's mod_md (apache2 -t, a start, /md-status) and by
apache-md (check, status --json) must be accepted or refused alike and show the same
md-status values, but for the differences apache-md keeps on purpose (KNOWN, README).
The whole sweep: `python -m tests.e2e.directive_sweep`."""
from __future__ import annotations

import os
import shutil

import pytest

from tests.e2e import directive_sweep as sweep

pytestmark = pytest.mark.skipif(not sweep.MOD_MD.exists() or os.geteuid() != 0
                                or not shutil.which("apache2"),
                                reason="needs Debian's mod_md, apache2 and root")


def test_a_sample_of_the_sweep_reads_as_mod_md():
    cases = sweep.sample()
    assert {c.name for c in cases} >= set(sweep.FOUND)
    offset = int(os.environ.get("E2E_PORT_OFFSET", "0")) + 5000
    results = sweep.run(cases, jobs=4, offset=offset)
    found = [f"{c.name}: {d}" for c in cases for d in results[c.name][2]
             if not sweep.known(c, results[c.name][2])]
    assert not found, "\n".join(found)
    # the sweep itself sees a difference: mod_md refuses what apache-md must refuse too
    theirs, ours, diffs = results["MDCertificateProtocol acme [server]"]
    assert not theirs.ok and not ours.ok and diffs == []


def test_the_sweep_tells_a_difference():
    ok = sweep.Verdict(True, status={"managed-domains": [{"name": "a.test", "renew-window": "0d"}]})
    other = sweep.Verdict(True, status={"managed-domains": [{"name": "a.test",
                                                             "renew-window": "0ms"}]})
    case = sweep.Case("x")
    assert sweep.compare(case, ok, ok) == []
    assert sweep.compare(case, ok, other) == ["/a.test/renew-window: apache-md '0ms', mod_md '0d'"]
    assert sweep.compare(case, sweep.Verdict(False, "bad"), ok) == [
        "mod_md rejects: bad; apache-md accepts"]
    # refused alike at parse time: with httpd's words, at the same line
    said = sweep.Verdict(False, "X not allowed in <If> context", line=30)
    assert sweep.compare(case, said, said) == []
    assert sweep.compare(case, said, sweep.Verdict(False, "X cannot occur within <If> section",
                                                   line=30)) == [
        "mod_md refuses at line 30: X not allowed in <If> context; apache-md at line 30: "
        "X cannot occur within <If> section"]
    assert sweep.compare(case, said, sweep.Verdict(False, said.message, line=29)) != []
    assert sweep.compare(case, sweep.Verdict(False, "AH10038"), sweep.Verdict(False, "other")) \
        == []  # refused at its start: mod_md's log has words of its own
