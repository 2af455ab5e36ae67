"""Data is text, never markup: the one place where the app escapes strings it did not write itself (class labels,
paths, file and folder names, reviewer names, notes, error messages that quote a path) before they are drawn.

- :func:`md` — for every Streamlit text that is Markdown: ``st.markdown`` / ``st.caption`` / ``st.toast`` /
  ``st.error`` & co., widget, tab, expander and metric labels, ``help`` texts. It backslash-escapes every ASCII
  punctuation character (CommonMark: bold, links, code, HTML, entities, tables, ``$`` math, ``:`` directives and
  badges all stop being syntax), breaks emoji / icon short codes (``:smile:``, ``:material/x:``) and bare links with
  an invisible word joiner, and folds line breaks into spaces.
- :func:`html` — for text placed inside HTML the app writes itself (``st.html``).
- :func:`plot` — for Plotly text (tick labels, legend names, hover text, annotations): Plotly reads a few HTML
  tags (``<b>``, ``<br>``, ``<a href>``…) in its text, so tags are escaped as entities, which Plotly shows as
  the characters.

The review grid (``assets/review_grid.js``) never needs these: it sets data only as DOM text.
"""
from __future__ import annotations

import html as _html
import re
from collections.abc import Iterable

_PUNCT = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&\"'=^@%;,?/])")
_JOINER = "\u2060"  # WORD JOINER: invisible, not a space; splits ":smile:" and "www." without changing the look
_LINEBREAKS = re.compile(r"[\r\n\u2028\u2029\x0b\x0c]+")


def md(value: object) -> str:
    """``value`` as literal text inside Streamlit Markdown."""
    s = _LINEBREAKS.sub(" ", str(value))
    s = _PUNCT.sub(r"\\\1", s)
    # short codes are replaced on the text after Markdown parsing (escapes are gone by then): break them up
    s = s.replace("\\:", "\\:" + _JOINER)
    return re.sub(r"(?i)(www|http|https|ftp|mailto)(\\:|\\\.)", lambda m: m.group(1) + _JOINER + m.group(2), s)


def md_join(values: Iterable[object], sep: str = ", ") -> str:
    return sep.join(md(v) for v in values)


def html(value: object) -> str:
    """``value`` as text inside HTML (tags, entities and quotes escaped)."""
    return _html.escape(str(value), quote=True)


def plot(value: object) -> str:
    """``value`` as text in a Plotly figure (tick labels, legend, hover, annotations). ``$`` becomes an entity:
    Plotly reads text between dollar signs as LaTeX."""
    return _html.escape(str(value), quote=False).replace("$", "&#36;")


def plot_all(values: Iterable[object]) -> list[str]:
    return [plot(v) for v in values]
