"""Plain words first (issue 23 items 6, 7, 10): epsilon in points beside the goal, a guarantee sentence
without its method's jargon, and table download names."""
from core.app.plain_words import epsilon_in_points, plain_and_method, table_file_name
from tests.conftest import synthetic_cache


def test_epsilon_reads_as_points_next_to_the_goal():
    words = epsilon_in_points(0.015, "gap", metric="accuracy", goal_points=1.0)
    assert words.startswith("Epsilon 0.015: at most 1.5 of every 100 new inputs are wrong where the full model is "
                            "right, so at most 1.5 points of accuracy lost")
    assert words.endswith("your goal above: lose at most 1.0 points (epsilon 0.010).")
    assert "can move by more" in epsilon_in_points(0.01, "consistency", metric="macro_f1")


def test_a_guarantee_sentence_keeps_its_meaning_and_loses_its_method():
    from core.engine.calibrate import calibrate

    cache = synthetic_cache(n=300, num_layers=6, k=2, seed=4)
    cal = calibrate(cache, "entropy", risk="consistency", epsilon=0.05, delta=0.1, method="ltt")
    plain, method = plain_and_method(cal.guarantee)
    assert method.startswith("Learn-then-Test") and "Hoeffding" in method
    assert "Hoeffding" not in plain and "Learn-then-Test" not in plain
    assert plain.endswith(".") and "(" not in plain.replace("(all", "")
    assert plain_and_method("No method here.") == ("No method here.", None)


def test_table_downloads_are_named_by_run_and_view():
    assert table_file_name("rotten_tomatoes-joint", "best-per-rule-loss-1") == \
        "rotten_tomatoes-joint-best-per-rule-loss-1.csv"
    assert table_file_name("a/b run", "seeds: s.d.") == "a-b-run-seeds-s.d.csv"


def test_a_setting_in_the_knobs_own_words():
    from core.app.plain_words import plain_setting

    assert plain_setting("voting", {"delta": 3, "k": 0}) == "vote threshold delta 3, layer exponent k 0"
    assert plain_setting("pcee", {"ensemble": False, "threshold": 0.691492}) == \
        "ensemble off, confidence threshold 0.6915"
    assert plain_setting("oracle", {}) == "no knobs"
