"""Home's run notes, one line per kind with a count (issue 23 item 8)."""
from core.app.home_notes import group_notes, kind_of

RISING = ("The validation accuracy (mean over exits) was still rising at the last epoch: {} after epoch 2, {} after "
          "epoch 3. More epochs may help.")


def test_fourteen_rising_runs_make_one_line_and_keep_every_run():
    notes = [(f"run-{i}", RISING.format(f"0.7{i:02d}", f"0.8{i:02d}")) for i in range(14)]
    notes.insert(3, ("odd", "Rows 4 and 9 of the training file had no label and were left out."))
    groups = group_notes(notes)
    assert [len(g.runs) for g in groups] == [14, 1]
    assert groups[0].line == ("14 runs: The validation accuracy (mean over exits) was still rising at the last "
                              "epoch. More epochs may help.")
    assert [name for name, _ in groups[0].runs] == [f"run-{i}" for i in range(14)]
    assert groups[0].runs[5][1] == RISING.format("0.705", "0.805")   # each run's own numbers stay
    assert groups[1].line == "1 run: Rows 4 and 9 of the training file had no label and were left out."


def test_notes_without_a_colon_group_by_their_words_without_numbers():
    assert kind_of("Rows 4 and 9 were left out.") == kind_of("Rows 12 and 30 were left out.")
    assert kind_of("Rows 4 and 9 were left out.") != kind_of("Rows 4 and 9 were kept.")
    assert len(group_notes([("a", "Rows 4 and 9 were left out."), ("b", "Rows 1 and 2 were left out.")])) == 1


def test_a_leading_file_name_is_not_the_kind_and_a_repeated_note_counts_once():
    left = "/data/{}.csv: 3 of 24 rows left out because their text is empty (data rows 4, 9, 14)"
    notes = [("a", left.format("train")), ("a", left.format("train")), ("b", left.format("other"))]
    assert kind_of(notes[0][1]) == kind_of(notes[2][1]) and "/data" not in kind_of(notes[0][1])
    (group,) = group_notes(notes)
    assert group.runs == (("a", left.format("train")), ("b", left.format("other")))
    assert group.line == "2 runs: for example a: 3 of 24 rows left out because their text is empty (data rows 4, 9, 14)"
    (one,) = group_notes(notes[:2])
    assert one.line == "1 run: " + left.format("train")
