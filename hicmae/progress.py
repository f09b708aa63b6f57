"""Progress bars (count, rate, ETA) for the long-running steps behind the ``hicmae`` commands.

Bars go to stderr, so ``--json`` output on stdout stays machine-readable. ``enabled`` is three-way:
``True`` always shows the bar, ``False`` never does, ``None`` shows it only when stderr is a terminal
(tqdm's ``disable=None``), so logs and pipes are not filled with carriage-return updates. Library
functions default to ``False`` (quiet); the CLI passes ``None`` unless ``--progress`` or
``--no-progress`` is given.
"""

from __future__ import annotations

import sys


def progress_bar(total: int, desc: str, unit: str = "it", enabled: bool | None = None):
    """A tqdm bar over ``total`` items on stderr; use as a context manager and ``update(n)``."""
    from tqdm import tqdm  # lazy: tqdm is cheap, but `hicmae --help` should import nothing it does not need

    # sys.stderr is looked up now, not at import, so redirected or captured stderr is honoured.
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                disable=None if enabled is None else not enabled)
