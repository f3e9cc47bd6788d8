"""Running Apache: configuration test and reload (the only commands we send it)."""
from __future__ import annotations

import logging
import os
import shlex
import subprocess

from ..core.model import Config

log = logging.getLogger(__name__)
DEBIAN_CONF = "/etc/apache2/apache2.conf"


def default_reload_command() -> list[str] | None:
    """Debian's way to reload Apache, or None when we may not (not root)."""
    if os.geteuid() != 0:
        return None
    if os.path.isdir("/run/systemd/system"):
        return ["systemctl", "reload", "apache2"]
    return ["apache2ctl", "graceful"]


def configtest_command(config: Config) -> list[str]:
    """`apache2ctl -t` for Debian's own config (it needs Debian's envvars),
    else the binary pointed at this config and root."""
    if os.path.abspath(config.main_file) == DEBIAN_CONF:
        return ["apache2ctl", "-t"]
    return ["apache2", "-d", config.server_root, "-f", config.main_file, "-t"]


def run(cmd: list[str], what: str, timeout: float = 120) -> str | None:
    """Run an Apache command; None on success, else a one-line error."""
    log.info("%s: %s", what, shlex.join(cmd))
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{shlex.join(cmd)}: {e}"
    if proc.returncode != 0:
        out = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()
        lines = [ln for ln in out.splitlines() if ln.strip() and "AH01882" not in ln]
        return f"{shlex.join(cmd)} exited with {proc.returncode}: {' '.join(lines[-3:])}"
    return None


def configtest(config: Config) -> str | None:
    return run(configtest_command(config), "Apache configuration test")


def reload(cmd: list[str]) -> str | None:
    return run(cmd, "reloading Apache")
