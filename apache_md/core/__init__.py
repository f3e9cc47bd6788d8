"""The core: what apache-md knows, as pure logic.

The configuration model, durations, renewal schedules and plans, certificates
and OCSP as data, the JSON formats of mod_md. Nothing here reads or writes a
file, talks to the network or looks at the clock on its own.
"""
