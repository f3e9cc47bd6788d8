#!/usr/bin/env python3
"""An MDChallengeDns01 command for tests: TXT records in pebble-challtestsrv.

    MDChallengeDns01 /usr/bin/python3 .../dns01_hook.py --url http://127.0.0.1:8055 [--log FILE]

called by apache-md (or mod_md) as

    ... setup <domain> <value>       adds the TXT record _acme-challenge.<domain>
    ... teardown <domain> [<value>]  removes the records (value: MDChallengeDns01Version 2)

The management URL comes from --url, else $CHALLTESTSRV_URL, else --port /
$CHALLTESTSRV_PORT on 127.0.0.1. Records are added, not replaced: an MD with
`example.org` and `*.example.org` validating both by dns-01 needs two values
under one name at the same time. challtestsrv can only clear all values of a
name, so teardown does that. Only the standard library: it runs under any
python3. --log appends one line per call (argv after the options), so tests
can see exactly how the hook was called.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request


def post(base: str, path: str, body: dict) -> None:
    req = urllib.request.Request(base.rstrip("/") + path, data=json.dumps(body).encode(),
                                 method="POST")
    # challtestsrv is local: no proxy (Debian's package build sets http_proxy to a dead end)
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10) as r:
        r.read()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=os.environ.get("CHALLTESTSRV_URL"))
    p.add_argument("--port", type=int, default=int(os.environ.get("CHALLTESTSRV_PORT", "8055")))
    p.add_argument("--log")
    p.add_argument("action", choices=["setup", "teardown"])
    p.add_argument("domain")
    p.add_argument("value", nargs="?")
    # The options come before the action; what follows it is taken literally, since a
    # TXT value (base64url) may begin with "-" and argparse would read it as an option.
    cut = next((i for i, arg in enumerate(argv) if arg in ("setup", "teardown")), len(argv))
    a = p.parse_args(argv[:cut + 1] + ["--"] + argv[cut + 1:]) if cut < len(argv) else p.parse_args(argv)
    base = a.url or f"http://127.0.0.1:{a.port}"
    if a.log:
        with open(a.log, "a") as f:
            f.write(" ".join([a.action, a.domain] + ([a.value] if a.value else [])) + "\n")
    host = f"_acme-challenge.{a.domain.removeprefix('*.').rstrip('.')}."
    try:
        if a.action == "setup":
            if not a.value:
                p.error("setup needs the TXT value")
            post(base, "/set-txt", {"host": host, "value": a.value})
        else:
            post(base, "/clear-txt", {"host": host})
    except (urllib.error.URLError, OSError) as e:
        print(f"dns01_hook: {a.action} {a.domain}: challtestsrv at {base}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
