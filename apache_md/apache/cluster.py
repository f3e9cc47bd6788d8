"""MDCluster*: what the fleet directives need of each other and of the fleet key file.

Checked when the configuration is read (`check`, the worker), so a fleet that cannot
work says why at file:line instead of failing at the first renewal.
"""
from __future__ import annotations

import os
import re
import socket
import stat

from ..core.model import GlobalSettings, Location, Problem

KEYGEN_HINT = "apache-md cluster keygen"


def default_node() -> str:
    """The host name without its domain, as a node name may be spelled."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname().split(".")[0])[:63]
    return name.lstrip("._-") or "node"


def key_file_problem(path: str) -> str | None:
    """Why the fleet key file cannot be used, None when it can."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path} does not exist; `{KEYGEN_HINT} {path}` writes a new fleet key (copy it " \
               "to every node)"
    except OSError as e:
        return f"cannot access {path} ({e.strerror}); the user running apache-md needs read " \
               "access to it"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a file"
    if st.st_mode & 0o077:
        return (f"{path} holds the fleet key but others may access it (mode "
                f"{stat.S_IMODE(st.st_mode):04o}); chmod 600 {path}")
    return None


def check(settings: GlobalSettings, locations: dict[str, Location],
          errors: list[Problem], warnings: list[Problem]) -> None:
    """Complete the cluster settings (the node name) and add what is wrong with them.
    `locations`: setting key -> where its directive stands."""
    given = [k for k in locations if k.startswith("cluster_")]
    if not settings.clustered:
        for k in given:
            warnings.append(Problem(f"{_directive(k)} has no effect without MDClusterEtcd",
                                    locations[k]))
        return
    where = locations.get("cluster_etcd")
    if not settings.cluster_node:
        settings.cluster_node = default_node()
    if not settings.cluster_key_file:
        errors.append(Problem("MDClusterEtcd needs MDClusterKeyFile, the file with the fleet key "
                              f"that seals private keys in etcd (`{KEYGEN_HINT} <file>` writes "
                              "one)", where))
    else:
        why = key_file_problem(settings.cluster_key_file)
        if why:
            errors.append(Problem(f"MDClusterKeyFile: {why}", locations.get("cluster_key_file")))
    cert, key = settings.cluster_etcd_cert, settings.cluster_etcd_key
    if bool(cert) != bool(key):
        missing, there = ("MDClusterEtcdKey", "cluster_etcd_cert") if cert else \
            ("MDClusterEtcdCert", "cluster_etcd_key")
        errors.append(Problem(f"{_directive(there)} needs {missing} too (a client certificate "
                              "and its key)", locations.get(there)))
    for k in ("cluster_etcd_ca", "cluster_etcd_cert", "cluster_etcd_key"):
        path = getattr(settings, k)
        if path and not os.path.isfile(path):
            errors.append(Problem(f"{_directive(k)}: file not found: {path}", locations.get(k)))
    tls = [k for k in ("cluster_etcd_ca", "cluster_etcd_cert") if getattr(settings, k)]
    if tls and not any(u.startswith("https://") for u in settings.cluster_etcd):
        warnings.append(Problem(f"{_directive(tls[0])} is only used with https:// endpoints; "
                                "MDClusterEtcd names none", locations.get(tls[0])))


_NAMES = {"cluster_etcd": "MDClusterEtcd", "cluster_node": "MDClusterNode",
          "cluster_prefix": "MDClusterPrefix", "cluster_key_file": "MDClusterKeyFile",
          "cluster_etcd_ca": "MDClusterEtcdCA", "cluster_etcd_cert": "MDClusterEtcdCert",
          "cluster_etcd_key": "MDClusterEtcdKey", "cluster_lease_ttl": "MDClusterLeaseTTL"}


def _directive(key: str) -> str:
    return _NAMES.get(key, key)
