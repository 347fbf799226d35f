"""The many-sessions benchmark's reading of Streamlit's messages (bench/bench_sessions.py): what it acts on
must be what the server says, or its error count and timings mean nothing."""
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from bench.bench_sessions import percentile, read_forward, with_param

KNOB = "entropy.threshold"


def _slider(widget_id: str, options: list[str], default: int, value: int | None = None) -> ForwardMsg:
    msg = ForwardMsg()
    s = msg.delta.new_element.slider
    s.id, s.options[:], s.default[:] = widget_id, options, [default]
    if value is not None:
        s.value[:], s.set_value = [value], True
    return msg


def test_the_watched_select_slider_is_found_by_its_key_with_its_shown_stop():
    opts = ["0", "0.01", "0.25"]
    seen = read_forward(_slider("$$ID-abc-" + KNOB, opts, 1), KNOB)
    assert seen.knob == {"id": "$$ID-abc-" + KNOB, "options": opts, "value": "0.01"}
    assert read_forward(_slider("$$ID-abc-" + KNOB, opts, 1, value=2), KNOB).knob["value"] == "0.25"
    # another rule's knob whose key merely ends the same way is not the watched one
    assert read_forward(_slider("$$ID-abc-x" + KNOB, opts, 1), KNOB).knob is None


def test_exceptions_run_ends_and_the_page_shown_are_read():
    msg = ForwardMsg()
    msg.delta.new_element.exception.type = "KeyError"
    msg.delta.new_element.exception.message = "'trust-iv'"
    assert read_forward(msg, KNOB).exceptions == ["KeyError: 'trust-iv'"]

    msg = ForwardMsg()
    msg.script_finished = ForwardMsg.FINISHED_EARLY_FOR_RERUN
    assert read_forward(msg, KNOB).finished == ForwardMsg.FINISHED_EARLY_FOR_RERUN

    msg = ForwardMsg()
    msg.navigation.page_script_hash = "h-home"
    for name, h in (("", "h-home"), ("explore", "h-explore")):
        page = msg.navigation.app_pages.add()
        page.url_pathname, page.page_script_hash = name, h
    seen = read_forward(msg, KNOB)
    assert (seen.page_hash, seen.wanted_hash) == ("h-home", "h-explore")   # a run that fell back to Home


def test_query_string_and_percentile():
    assert with_param("run=a&entropy.threshold=0.1", KNOB, "0.25") == "run=a&entropy.threshold=0.25"
    assert with_param("run=a", KNOB, "0.25") == "run=a&entropy.threshold=0.25"
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 90) == 4.6
    assert percentile([], 50) != percentile([], 50)   # nan when nothing was measured
