"""Fault injection for the reliability suite: off unless `EBMOPS_FAULT_POINT` names a point.

Code that must survive a crash calls `fault_point("<name>")` at the places a crash matters (between
moving an alias and writing its audit record, between logging a batch and saving the monitor state...).
When `EBMOPS_FAULT_POINT` equals that name the process kills itself with SIGKILL on the spot: no
`finally`, no atexit, no flush, exactly what a kill -9 or a lost machine does. With the variable unset
(always, outside tests) the call is a dictionary lookup.

Known points (grep `fault_point(` for the live list) are listed in docs/reliability.md.
"""

from __future__ import annotations

import os
import signal

FAULT_POINT_ENV = "EBMOPS_FAULT_POINT"


def fault_point(name: str) -> None:
    """Die here with SIGKILL when `EBMOPS_FAULT_POINT` is `name`."""
    if os.environ.get(FAULT_POINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
