"""Home's notes about the runs, one line per kind (issue 23 item 8): fourteen runs that were "still
rising at the last epoch" make one line with a count, and the runs behind it go into an expander.
Torch-free, no streamlit."""
from __future__ import annotations

import re
from dataclasses import dataclass

_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)*%?")
_FILE = re.compile(r"[/\\]|\.\w{1,5}$")   # a path, or a file name with an extension


@dataclass(frozen=True)
class NoteGroup:
    headline: str                      # the kind, in words, without any one run's numbers
    runs: tuple[tuple[str, str], ...]  # (run name, its own full sentence)

    @property
    def line(self) -> str:
        n = len({name for name, _ in self.runs})
        return f"{n} run{'s' if n != 1 else ''}: {self.headline}"


def _without_file(sentence: str) -> str:
    """The note without a leading 'FILE: ' (data notes name the file they read)."""
    head, sep, rest = sentence.partition(": ")
    return rest if sep and _FILE.search(head.strip()) else sentence


def kind_of(sentence: str) -> str:
    """What a note says without its numbers: the part before its first colon (where the numbers of one
    run follow), else the sentence with every number written as '#'; a leading file name is not part of
    the kind."""
    sentence = _without_file(sentence)
    head = sentence.split(":", 1)[0].strip() if ":" in sentence else _NUMBER.sub("#", sentence).strip()
    return head.rstrip(".") + "."


def group_notes(notes: list[tuple[str, str]]) -> list[NoteGroup]:
    """(run, sentence) pairs grouped by kind_of, in order of first appearance."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for run, sentence in dict.fromkeys(notes):   # a note a run repeats (train and dev file alike) counts once
        groups.setdefault(kind_of(sentence), []).append((run, sentence))
    out = []
    for kind, runs in groups.items():
        if len({name for name, _ in runs}) == 1 and len(runs) == 1:
            out.append(NoteGroup(runs[0][1], tuple(runs)))
            continue
        if "#" in kind:   # the kind is the words without their numbers: show one run's note as the example
            out.append(NoteGroup(f"for example {runs[0][0]}: {_without_file(runs[0][1])}", tuple(runs)))
            continue
        ends = {_last_sentence(text) for _, text in runs}  # advice every run shares ("More epochs may help.")
        shared = ends.pop() if len(ends) == 1 else ""
        out.append(NoteGroup(kind + (" " + shared if shared and not _NUMBER.search(shared) else ""), tuple(runs)))
    return out


def _last_sentence(text: str) -> str:
    parts = re.split(r"(?<=\.)\s+", text.strip())
    return parts[-1] if len(parts) > 1 else ""
