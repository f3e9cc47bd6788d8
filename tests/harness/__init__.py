"""Reusable end-to-end harness: a private Apache, Pebble + challtestsrv, and
real-tool clients (openssl, curl). Product-independent on purpose."""

from . import client, pki
from .acmefront import AcmeFront
from .apache import Apache
from .etcd import EtcdCluster
from .faults import FaultProxy
from .haproxy import HAProxy
from .ocsp_responder import OCSPResponder
from .pebble import Pebble, default_eab
from .proxy import ForwardProxy

__all__ = ["AcmeFront", "Apache", "EtcdCluster", "FaultProxy", "HAProxy", "ForwardProxy", "OCSPResponder", "Pebble", "default_eab",
           "client", "pki"]
