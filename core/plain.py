"""User text inside Streamlit Markdown, as plain text.

Sentences, task / run / label / file names, error messages that quote them and URL values come from
users. Where such a value sits inside a sentence drawn with st.markdown / caption / info / warning /
error / success, `md(value)` backslash-escapes every character Markdown (CommonMark, GitHub tables,
Streamlit's LaTeX, colour and icon directives) gives a meaning, and folds line breaks into spaces, so
the value shows as the characters it holds: no links, images, headings, emphasis, code spans or maths.
"""
from __future__ import annotations

# every ASCII punctuation character may be backslash-escaped in CommonMark; these are the ones that
# start or end a construct anywhere in a line: links and images, emphasis, code spans, HTML and
# entities, tables, ~~strike~~, $ maths, :colour[...] / :icon: directives, and the `.` and `:` of GFM's
# bare-URL and e-mail links (www.x.org, http://x, a@b.org)
_SPECIAL = frozenset("\\`*_{}[]<>!|$~:&^.")
_LINE_START = frozenset("#+-=>")  # headings, lists, setext underlines, quotes: only at a line's start


def md(value) -> str:
    """`value` as Markdown source that renders as exactly its characters (line breaks -> spaces)."""
    text = " ".join(str(value).splitlines())
    out = "".join("\\" + c if c in _SPECIAL else c for c in text)
    head = out.lstrip()
    if head[:1] in _LINE_START:  # "- x", "# x", "> x" at the start of the element's text
        out = out[:len(out) - len(head)] + "\\" + head
    elif head[:1].isdigit():  # "1) x" ("1. x" is covered by the escaped ".")
        out = out.replace(")", "\\)", 1)
    return out
