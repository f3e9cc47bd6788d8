"""apache-md: mod_md-style managed TLS certificates for Apache httpd."""

__version__ = "0.2.0"
# The mod_md release whose formats and behaviour we follow; reported as md-status "version".
MOD_MD_COMPAT_VERSION = "2.6.11"
