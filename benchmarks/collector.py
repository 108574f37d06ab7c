"""The measuring processes' own garbage collector, held still while they measure.

The caller simulator and the vendor fakes are instruments: a collection in either stops its event
loop for up to ~50 ms (a full collection of tens of thousands of objects on this machine), and
the reply it delayed - a token sent late by the fake, an audio frame read late by the caller - would
be charged to the server. So they collect at moments that are not measured (start-up, between
runs) and not in between. What a run leaves as cyclic garbage waits for the next ``hold``: a
few MB for a run of hundreds of calls. The server under test keeps Python's defaults.
"""

from __future__ import annotations

import gc


def hold() -> None:
    """Collect now, move what is left out of the collector's reach for good (``gc.freeze``: the
    fakes keep what they recorded, the caller its imports), and collect no more until the next
    ``hold``."""
    gc.collect()
    gc.freeze()
    gc.disable()
