"""User text inside Streamlit Markdown, as plain text.

Sentences, task / run / label / file names, error messages that quote them and URL values come from
users. Where such a value sits inside a sentence drawn with st.markdown / caption / info / warning /
error / success, `md(value)` backslash-escapes every character Markdown (CommonMark, GitHub tables,
Streamlit's LaTeX, colour and icon directives) gives a meaning, and folds line breaks into spaces, so
the value shows as the characters it holds: no links, images, headings, emphasis, code spans or maths.

Bare URLs and e-mail addresses need more than escapes: Streamlit's Markdown (remark-gfm) links them by
matching `http://`, `https://`, `www.` and `a@b.c` in the text *after* escapes are resolved. An
invisible WORD JOINER (U+2060) goes inside each of those patterns (after `http`, `https` and `www`,
after the `@`), so no pattern matches while the text reads and renders as the same characters.
"""
from __future__ import annotations

import html
import re

# every ASCII punctuation character may be backslash-escaped in CommonMark; these are the ones that
# start or end a construct anywhere in a line: links and images, emphasis, code spans, HTML and
# entities, tables, ~~strike~~, $ maths, :colour[...] / :icon: directives, and the `:` and `@` of GFM's
# bare-URL and e-mail links (http://x, a@b.org; those are broken up below as well)
_SPECIAL = frozenset("\\`*_{}[]<>!|$~:&^@")
WORD_JOINER = "\u2060"  # invisible, zero-width, not a space or punctuation: it only splits a pattern
# after escaping: the scheme of http(s)://, www. (GFM's bare-URL link starts) and the @ of an e-mail address
_AUTOLINK = re.compile(r"(?i)(https?)(?=\\:)|(www)(?=\.)|(\\@)")
_LINE_START = re.compile(r"^(\s*)([#+\-=>]|\d+(?=[.)]))")  # headings, lists, setext lines, quotes


def md(value) -> str:
    """`value` as Markdown source that renders as exactly its characters (line breaks -> spaces)."""
    text = " ".join(str(value).splitlines())
    out = "".join("\\" + c if c in _SPECIAL else c for c in text)
    out = _AUTOLINK.sub(lambda m: m.group(0) + WORD_JOINER, out)
    m = _LINE_START.match(out)  # only the start of the element's text can start a block
    if m:
        if m.group(2)[0].isdigit():  # "1. x" / "1) x": escape the dot or parenthesis
            end = m.end(2)
            out = out[:end] + "\\" + out[end:]
        else:
            out = out[:m.start(2)] + "\\" + out[m.start(2):]
    return out


def plot_text(value) -> str:
    """`value` for Plotly text (tick labels, annotations, hover): Plotly reads <b>, <a href=...> and
    other tags in every text, so < > & are written as entities it shows as the characters."""
    return html.escape(str(value), quote=False)
