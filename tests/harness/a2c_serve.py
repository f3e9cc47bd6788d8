"""Runs acme2certifier's WSGI application (its own `acme2certifier_wsgi.py`,
unchanged) on loopback over TLS; started by a2c.py in acme2certifier's venv.

Only the network is bent, as Pebble's `httpPort`/`tlsPort` and `-dnsserver` do:
its resolver asks challtestsrv (on a port of ours, not 53), and its validation
connections to ports 80/443 go to Apache's http/https ports.

argv: listen_port cert key dns_port http_port https_port
"""
import socket
import ssl
import sys
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIServer, make_server

import dns.resolver

port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dns_port, http_port, https_port = (int(a) for a in sys.argv[4:7])

_resolver_init = dns.resolver.Resolver.__init__


def _init(self, *args, **kwargs):
    _resolver_init(self, *args, **kwargs)
    self.port = dns_port  # nameservers set after this take it


dns.resolver.Resolver.__init__ = _init
_PORTS = {80: http_port, 443: https_port}
_connect = socket.socket.connect


def _connect_mapped(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and address[1] in _PORTS:
        address = (address[0], _PORTS[address[1]], *address[2:])
    return _connect(self, address)


socket.socket.connect = _connect_mapped

from acme2certifier.share.acme2certifier_wsgi import application, get_handler_cls  # noqa: E402


class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def tls_application(environ, start_response):
    environ["wsgi.url_scheme"] = "https"  # its URLs are built from it
    return application(environ, start_response)


srv = make_server("127.0.0.1", port, tls_application, server_class=Server,
                  handler_class=get_handler_cls())
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(f"acme2certifier on https://localhost:{port}/directory", flush=True)
srv.serve_forever()
