"""The core: what apache-md knows, as pure logic.

The configuration model, durations, renewal schedules and plans, jobs,
certificates and OCSP as data, the JSON formats of mod_md. Nothing here reads
or writes a file, starts a process or talks to the network: the other wings
hand it what they read (store/facts.py) and act on what it decides.
"""
