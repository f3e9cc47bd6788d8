"""Work done in a fresh interpreter, for a long-lived process (the worker): what a
process loads or allocates it keeps (Python frees memory to itself, not to the
system), so a peak or a library needed once is better left to a child."""
from __future__ import annotations

import os

_HERE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def child_env() -> dict[str, str]:
    """The environment for `python -c` importing this very apache_md."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        [_HERE] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
