"""The fleet: several Apache nodes sharing their certificates through etcd (docs/cluster.md).

Imports core and store only; the worker and the CLI wire it in. Nothing here is used
unless MDClusterEtcd is configured.
"""
