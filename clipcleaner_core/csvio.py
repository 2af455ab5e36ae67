"""The one CSV writer of clipcleaner: every CSV the project writes (exports, downloads, ``db history --csv``, the
demo's tables) goes through :func:`to_safe_csv`, so no cell can run as a spreadsheet formula.

A text cell that a spreadsheet would evaluate (starting with ``= + - @``, tab or CR) gets a leading ``'`` unless it
is a plain decimal number such as ``-1`` or ``+2.5e3``. :func:`clipcleaner_core.dataset.read_table` takes that
quote off again, so a CSV written here loads back into clipcleaner unchanged. Light imports only (pandas lazily):
the CLI uses it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet treat a cell as a formula (OWASP CSV injection)."""
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def escape_formula(value: object) -> object:
    """Neutralise spreadsheet formula injection in one cell (numbers and safe text pass unchanged)."""
    if not isinstance(value, str) or not value.startswith(FORMULA_START):
        return value
    if _PLAIN_NUMBER.fullmatch(value):
        return value
    return "'" + value


def to_safe_csv(df: pd.DataFrame) -> str:
    """CSV text of ``df`` (no index, ``\\n`` line ends) with every text cell formula-escaped."""
    import pandas as pd

    safe = df.copy()
    for c in safe.columns:
        if safe[c].dtype == object or pd.api.types.is_string_dtype(safe[c]):
            safe[c] = safe[c].map(escape_formula)
    safe.columns = [escape_formula(str(c)) for c in safe.columns]
    return safe.to_csv(index=False, lineterminator="\n")


def write_safe_csv(path: str | Path, df: pd.DataFrame) -> Path:
    """Write :func:`to_safe_csv` of ``df`` to ``path`` atomically (temp file + rename); returns the path."""
    from .workspace import atomic_write_text

    p = Path(path)
    atomic_write_text(p, to_safe_csv(df))
    return p
