"""The store: mod_md's directory layout on disk, the single source of truth.

Atomic files, locks, jobs, the credentials of each MD, and the state the
processes leave for each other (heartbeat, activation requests).
"""
