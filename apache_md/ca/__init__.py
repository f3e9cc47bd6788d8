"""The CA side: ACME (RFC 8555) and OCSP over the network.

The client, accounts, challenges and their pre-flight check, the renewal
drive, ARI and the OCSP stapler. Never imports the apache wing.
"""

DRIVE_PARALLEL = 8  # MDs driven at once by the worker and `renew` (--parallel)
