"""Tests for core.data.tasks: the default task, GLUE folders, user files, dataset folders, restore_texts."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.data import glue, hub, rotten_tomatoes
from core.data import tasks as data

REPO = Path(__file__).resolve().parents[1]
SHARED_GLUE = REPO.parent / "shared" / "data" / "glue"
needs_glue = pytest.mark.skipif(not SHARED_GLUE.is_dir(),
                                reason=f"GLUE benchmark data absent: no folder {SHARED_GLUE}")


# ------------------------------------------------------------------------------------ helpers

def _write(path: Path, text: str) -> Path:
    """Write `text` to `path` (creating folders) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _tsv(*rows) -> str:
    """Tab-separated lines from tuples."""
    return "".join("\t".join(map(str, r)) + "\n" for r in rows)


def _frame(n: int = 20, *, labels=("neg", "pos"), pair: bool = False) -> pd.DataFrame:
    """A small user table: text, [text_pair], label cycling through `labels`."""
    df = pd.DataFrame({"text": [f"sentence number {i}" for i in range(n)],
                       "label": [labels[i % len(labels)] for i in range(n)]})
    if pair:
        df.insert(1, "text_pair", [f"second part {i}" for i in range(n)])
    return df


def _round_trip(task: data.TaskData, split: str = "dev") -> None:
    """restore_texts(source) equals the frame's texts, also after a JSON round trip."""
    source = json.loads(json.dumps(task.source(split)))
    assert data.restore_texts(source) == task.texts(split)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """Keep `datasets` caches inside tmp_path."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    return datasets


@pytest.fixture
def glue_root(tmp_path) -> Path:
    """Tiny GLUE folders in the standard layouts the shared data lacks (and an RTE with names)."""
    root = tmp_path / "glue"
    _write(root / "CoLA" / "train.tsv", _tsv(*[("gj04", i % 2, "*" if i % 2 == 0 else "",
                                                f"cola sentence {i}") for i in range(6)]))
    _write(root / "CoLA" / "dev.tsv", _tsv(("gj04", 1, "", "a fine one ."),
                                           ("gj04", 0, "*", "one fine a .")))
    qnli = [("index", "question", "sentence", "label")]
    _write(root / "QNLI" / "train.tsv", _tsv(*qnli, *[(i, f"q{i}?", f"s{i}.", lab) for i, lab in
                                                       enumerate(["entailment", "not_entailment"] * 3)]))
    _write(root / "QNLI" / "dev.tsv", _tsv(*qnli, (0, "why?", "because.", "not_entailment")))
    qqp = [("id", "qid1", "qid2", "question1", "question2", "is_duplicate")]
    _write(root / "QQP" / "train.tsv", _tsv(*qqp, *[(i, 2 * i, 2 * i + 1, f"a{i}?", f"b{i}?", i % 2)
                                                     for i in range(6)]))
    _write(root / "QQP" / "dev.tsv", _tsv(*qqp, (9, 18, 19, 'how "so"?', "why?", 1)))
    head = ("index", "promptID", "pairID", "genre", "sentence1", "sentence2", "label1", "gold_label")
    _write(root / "MNLI" / "train.tsv", _tsv(head, *[(i, 1, 1, "fiction", f"p{i}", f"h{i}", lab, lab)
                                                     for i, lab in enumerate(
                                                         ["entailment", "neutral", "contradiction"] * 2)]))
    _write(root / "MNLI" / "dev_matched.tsv", _tsv(head + ("label2",),
                                                   (0, 1, 1, "slate", "p", "h", "neutral", "neutral",
                                                    "neutral")))
    rte = [("index", "sentence1", "sentence2", "label")]
    _write(root / "RTE" / "train.tsv", _tsv(*rte, *[(i, f"p{i}", f"h{i}", lab) for i, lab in
                                                     enumerate(["entailment", "not_entailment"] * 2)]))
    _write(root / "RTE" / "dev.tsv", _tsv(*rte, (0, "p", "h", "not_entailment")))
    return root


# ---------------------------------------------------------------------------- default task

def test_default_task_counts():
    """rotten_tomatoes: 8,530 rows split about 80/10/10 into train, dev and the held-out test split,
    stratified, disjoint."""
    task = data.load_task()
    assert (task.name, task.metric, task.label_names, task.is_pair) == (
        "rotten_tomatoes", "accuracy", ["negative", "positive"], False)
    test = data.load_test_split()
    assert len(task.train) + len(task.dev) + len(test) == 8530
    assert abs(len(task.dev) - 853) <= 2
    assert task.dev["label"].value_counts().to_dict() == {0: 427, 1: 427}
    ids = np.concatenate([task.train["row_id"], task.dev["row_id"], test["row_id"]])
    assert sorted(ids) == list(range(8530))
    assert list(task.train.columns) == ["text", "label", "row_id"]
    assert task.train["label"].dtype == np.int64 and task.train["row_id"].is_monotonic_increasing


def test_default_split_is_deterministic():
    """The split depends on neither the seed nor the parse cache."""
    first = data.load_task("rotten_tomatoes", seed=0)
    rotten_tomatoes._rotten_tomatoes_table.cache_clear()
    again = data.load_task("Rotten-Tomatoes", seed=7)
    pd.testing.assert_frame_equal(first.dev, again.dev)
    pd.testing.assert_frame_equal(first.train, again.train)
    assert data.load_task(None).dev["row_id"].tolist() == first.dev["row_id"].tolist()


def test_default_load_parses_the_csv_once():
    """The second load of the default task reads the parsed table from the cache (no second parse)."""
    table = rotten_tomatoes._rotten_tomatoes_table
    table.cache_clear()
    data.load_task()
    data.load_task()
    info = table.cache_info()
    assert info.misses == 1 and info.hits >= 1, info


def test_max_train_max_dev_subsets():
    """Subsets come from the full split, follow the seed and stay in row_id order."""
    full = data.load_task()
    small = data.load_task(max_train=100, max_dev=50, seed=3)
    assert (len(small.train), len(small.dev)) == (100, 50)
    assert set(small.train["row_id"]) <= set(full.train["row_id"])
    assert set(small.dev["row_id"]) <= set(full.dev["row_id"])
    assert small.dev["row_id"].is_monotonic_increasing
    same = data.load_task(max_train=100, max_dev=50, seed=3)
    other = data.load_task(max_train=100, max_dev=50, seed=4)
    assert same.train["row_id"].tolist() == small.train["row_id"].tolist()
    assert other.train["row_id"].tolist() != small.train["row_id"].tolist()
    assert len(data.load_task(max_dev=10**6).dev) == len(full.dev)
    with pytest.raises(ValueError, match="max_train must be a positive integer"):
        data.load_task(max_train=0)


def test_default_restore_round_trip():
    """Default-task sources restore the same texts, for train and dev, also for subsets."""
    task = data.load_task(max_train=300)
    _round_trip(task, "dev")
    _round_trip(task, "train")
    source = task.source("dev")
    assert source["kind"] == "builtin" and source["task"] == "rotten_tomatoes"
    assert source["split"] == "dev" and source["row_ids"] == task.dev["row_id"].tolist()
    assert data.restore_texts({**source, "row_ids": source["row_ids"][::-1][:3]}) == \
        task.texts("dev")[::-1][:3]
    assert data.restore_texts({**source, "row_ids": np.array(source["row_ids"][:2])}) == \
        task.texts("dev")[:2]


def test_builtin_task_rejects_columns_and_data_dir(tmp_path):
    """Column names or a data_dir make no sense for the packaged default."""
    with pytest.raises(ValueError, match="text_column applies to"):
        data.load_task("rotten_tomatoes", text_column="x")
    with pytest.raises(ValueError, match="takes no data_dir"):
        data.load_task("rotten_tomatoes", data_dir=tmp_path)


def test_restore_rejects_bad_sources():
    """A source without row ids, with an unknown kind or with stale row ids is refused clearly."""
    with pytest.raises(ValueError, match="row_ids"):
        data.restore_texts({"task": "rotten_tomatoes"})
    with pytest.raises(ValueError, match="unknown kind 'tape'"):
        data.restore_texts({"kind": "tape", "row_ids": [0]})
    with pytest.raises(ValueError, match="out of range"):
        data.restore_texts({"kind": "builtin", "task": "rotten_tomatoes", "row_ids": [99999]})
    with pytest.raises(ValueError, match="data changed"):
        data.restore_texts({"kind": "builtin", "task": "rotten_tomatoes", "row_ids": [0],
                         "n_rows": 10})


# ------------------------------------------------------------------------ real GLUE folders

GLUE_COUNTS = {"SST-2": ("sst2", 67349, 872, False, "accuracy"),
               "MRPC": ("mrpc", 3668, 408, True, "acc_f1"),
               "RTE": ("rte", 2490, 277, True, "accuracy")}


def _shared_folders() -> list[str]:
    """GLUE task folders present in the shared data (the README's three when absent)."""
    if not SHARED_GLUE.is_dir():
        return sorted(GLUE_COUNTS)
    return sorted(p.name for p in SHARED_GLUE.iterdir() if (p / "train.tsv").is_file())


@needs_glue
@pytest.mark.parametrize("folder", _shared_folders())
def test_shared_glue_folder_loads(folder):
    """Every shared GLUE folder loads without data_dir; README row counts hold; texts restore."""
    name = glue._builtin_name(folder)
    assert name in glue.GLUE_TASKS, f"{folder} is not a GLUE task core.data.tasks knows"
    task = data.load_task(folder)
    assert task.name == name and task.metric == glue.GLUE_TASKS[name].metric
    if folder in GLUE_COUNTS:
        key, n_train, n_dev, is_pair, metric = GLUE_COUNTS[folder]
        assert (len(task.train), len(task.dev), task.is_pair, task.metric) == (
            n_train, n_dev, is_pair, metric)
    assert task.dev["row_id"].tolist() == list(range(len(task.dev)))
    assert set(task.train["label"]) == set(range(len(task.label_names)))
    _round_trip(task, "dev")
    assert data.restore_texts({**task.source("train"), "row_ids": [0, 5]}) == \
        task.texts("train")[:6:5]


@needs_glue
def test_shared_glue_data_dir_forms():
    """data_dir may be the task folder or the GLUE root; names are case-insensitive."""
    if not (SHARED_GLUE / "RTE").is_dir():
        pytest.skip(f"no RTE folder in {SHARED_GLUE}")
    by_folder = data.load_task("rte", data_dir=SHARED_GLUE / "RTE")
    by_root = data.load_task("RTE", data_dir=SHARED_GLUE)
    pd.testing.assert_frame_equal(by_folder.dev, by_root.dev)
    assert by_root.source("dev")["data_dir"] == str((SHARED_GLUE / "RTE").resolve())
    first = by_root.dev.iloc[0]  # "Christopher Reeve had an accident." is label 1
    assert first["text_pair"] == "Christopher Reeve had an accident."
    assert by_root.label_names[first["label"]] == "not_entailment"


@needs_glue
def test_shared_mrpc_quotes_and_labels():
    """MRPC keeps quote characters inside sentences (QUOTE_NONE) and reads Quality as label."""
    if not (SHARED_GLUE / "MRPC").is_dir():
        pytest.skip(f"no MRPC folder in {SHARED_GLUE}")
    task = data.load_task("mrpc")
    assert task.train["label"].sum() == 2474
    assert task.dev["text_pair"].iloc[0].startswith('"The foodservice pie business')


# ------------------------------------------------------------------- synthetic GLUE layouts

@pytest.mark.parametrize("name,n_train,n_dev,pair,metric,names", [
    ("cola", 6, 2, False, "mcc", ["unacceptable", "acceptable"]),
    ("qnli", 6, 1, True, "accuracy", ["entailment", "not_entailment"]),
    ("QQP", 6, 1, True, "acc_f1", ["not_duplicate", "duplicate"]),
    ("mnli", 6, 1, True, "accuracy", ["entailment", "neutral", "contradiction"]),
    ("rte", 4, 1, True, "accuracy", ["entailment", "not_entailment"]),
])
def test_glue_layouts(glue_root, name, n_train, n_dev, pair, metric, names):
    """CoLA without header, string labels (QNLI, MNLI, RTE copies), MNLI dev_matched."""
    task = data.load_task(name, data_dir=glue_root)
    assert (len(task.train), len(task.dev), task.is_pair, task.metric, task.label_names) == (
        n_train, n_dev, pair, metric, names)
    _round_trip(task, "dev")
    _round_trip(task, "train")


def test_glue_label_values(glue_root):
    """String labels map to the GLUE names' order; CoLA keeps its integer labels."""
    assert data.load_task("mnli", data_dir=glue_root).train["label"].tolist() == [0, 1, 2, 0, 1, 2]
    assert data.load_task("rte", data_dir=glue_root).dev["label"].tolist() == [1]
    cola = data.load_task("cola", data_dir=glue_root / "CoLA")
    assert cola.train["label"].tolist() == [0, 1, 0, 1, 0, 1]
    assert cola.dev["text"].tolist() == ["a fine one .", "one fine a ."]
    assert data.load_task("qqp", data_dir=glue_root).dev["text"].tolist() == ['how "so"?']


def test_glue_missing_folder_says_pass_data_dir(tmp_path, monkeypatch):
    """No data_dir and no shared folder: the error says --data-dir and where it looked."""
    monkeypatch.setattr(glue, "SHARED_GLUE_DIR", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="--data-dir") as err:
        data.load_task("cola")
    assert str(tmp_path / "nowhere" / "CoLA") in str(err.value)
    with pytest.raises(ValueError, match="no train.tsv"):
        data.load_task("sst2", data_dir=tmp_path)


def test_glue_bad_files(glue_root):
    """Missing dev file, out-of-range and unknown labels name the file."""
    (glue_root / "MNLI" / "dev_matched.tsv").unlink()
    with pytest.raises(ValueError, match="dev_matched.tsv"):
        data.load_task("mnli", data_dir=glue_root)
    sst = glue_root / "SST-2"
    _write(sst / "train.tsv", _tsv(("sentence", "label"), ("good", 1), ("bad", 0), ("odd", 2)))
    _write(sst / "dev.tsv", _tsv(("sentence", "label"), ("fine", 1)))
    with pytest.raises(ValueError, match=r"train\.tsv: label 2 at data row 3 .*not in range 0\.\.1"):
        data.load_task("sst2", data_dir=glue_root)
    _write(sst / "train.tsv", _tsv(("sentence", "label"), ("good", 1), ("bad", "meh")))
    with pytest.raises(ValueError, match="label 'meh' .* not one of the task's labels"):
        data.load_task("sst2", data_dir=glue_root)
    _write(sst / "train.tsv", _tsv(("sentence", "label"), ("good", 1), ("a\tstray tab", 0)))
    with pytest.raises(ValueError, match=r"train\.tsv: .*line 3 has 3 tab-separated fields, "
                                         r"expected 2"):
        data.load_task("sst2", data_dir=glue_root)
    _write(sst / "train.tsv", _tsv(("text", "y"), ("good", 1)))
    with pytest.raises(ValueError, match="no header row naming the label column 'label'"):
        data.load_task("sst2", data_dir=glue_root)


def test_glue_restore_when_folder_gone(glue_root, monkeypatch):
    """Restoring after the GLUE folder is removed says where it looked."""
    monkeypatch.setattr(glue, "SHARED_GLUE_DIR", glue_root.parent / "elsewhere")
    task = data.load_task("qnli", data_dir=glue_root)
    source = task.source("dev")
    for f in (glue_root / "QNLI").iterdir():
        f.unlink()
    with pytest.raises(ValueError, match="no longer available") as err:
        data.restore_texts(source)
    assert str(glue_root / "QNLI" / "dev.tsv") in str(err.value)


# ----------------------------------------------------------------------------- user files

def _save(df: pd.DataFrame, path: Path) -> Path:
    """Save `df` in the format its suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix == ".tsv":
        df.to_csv(path, index=False, sep="\t")
    elif path.suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    elif path.suffix == ".json":
        df.to_json(path, orient="records")
    else:
        df.to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json", ".parquet"])
def test_user_files_happy_path(tmp_path, suffix):
    """Each format loads; string labels map sorted; pairs work; texts restore."""
    train = _save(_frame(20, labels=("pos", "neg", "mixed"), pair=True), tmp_path / f"train{suffix}")
    dev = _save(_frame(6, labels=("neg", "pos"), pair=True), tmp_path / f"dev{suffix}")
    task = data.load_task("mine", train_file=train, dev_file=dev, text_column="text",
                       text_pair_column="text_pair", label_column="label")
    assert (task.name, task.is_pair, task.label_names) == ("mine", True, ["mixed", "neg", "pos"])
    assert (len(task.train), len(task.dev)) == (20, 6)
    assert task.train["label"].tolist()[:3] == [2, 1, 0]
    assert task.dev["text_pair"].tolist()[0] == "second part 0"
    _round_trip(task, "dev")
    _round_trip(task, "train")
    source = task.source("dev")
    assert source["kind"] == "files" and source["file"] == str(dev.resolve())
    assert source["label_column"] == "label" and source["text_pair_column"] == "text_pair"


def test_user_file_without_dev_is_split(tmp_path):
    """No dev_file: a stratified tenth of train becomes dev; both restore from the train file."""
    path = _save(_frame(100), tmp_path / "data" / "train.csv")
    task = data.load_task(train_file=path)
    assert task.name == "data" and task.metric == "accuracy"
    assert (len(task.train), len(task.dev)) == (90, 10)
    assert task.dev["label"].value_counts().to_dict() == {0: 5, 1: 5}
    assert not set(task.train["row_id"]) & set(task.dev["row_id"])
    assert task.source("dev")["file"] == str(path.resolve())
    _round_trip(task, "dev")


def test_user_labels_int_kept_and_guessed_columns(tmp_path):
    """Integer labels: the classes are the values that occur (no empty class for a value that never
    occurs); column names are guessed."""
    df = pd.DataFrame({"sentence": [f"s{i}" for i in range(12)], "labels": [0, 2] * 6})
    task = data.load_task("ints", train_file=_save(df, tmp_path / "t.jsonl"), metric="macro_f1")
    assert task.label_names == ["0", "2"] and task.metric == "macro_f1"
    assert set(task.train["label"]) | set(task.dev["label"]) == {0, 1}
    text_ints = pd.DataFrame({"text": ["a", "b", "c", "d"], "label": ["1", "0", "1", "0"]})
    task = data.load_task("s", train_file=_save(text_ints, tmp_path / "s.jsonl"),
                       dev_file=_save(text_ints, tmp_path / "sd.jsonl"))
    assert task.label_names == ["0", "1"] and task.train["label"].tolist() == [1, 0, 1, 0]


def test_user_texts_that_look_like_missing_values(tmp_path):
    """'NA', 'null' and numbers stay texts in CSV files."""
    path = _write(tmp_path / "t.csv", "text,label\nNA,0\nnull,1\n42,0\nfine,1\n")
    task = data.load_task("t", train_file=path, dev_file=path)
    assert task.train["text"].tolist() == ["NA", "null", "42", "fine"]


@pytest.mark.parametrize("content,match", [
    ("", "file is empty"),
    ("text,label\n", "has no data rows"),
    ("text,label\na,0\nb,1.5\nc,1\n", r"label 1\.5 at data row 2 .* is not an integer"),
    ("text,label\na,0\nb,pos\nc,1\n", r"the labels mix integers \(0, 1\) and names \('pos'\)"),
    ("text,label\na,0\nb,\nc,1\n", "missing label at data row 2"),
    ("text,label\na,1\nb,1\nc,1\n", "single class"),
])
def test_user_file_errors(tmp_path, content, match):
    """Faults in a train file name the file and the fault."""
    path = _write(tmp_path / "bad.csv", content)
    dev = _save(_frame(4, labels=(0, 1)), tmp_path / "dev.csv")
    with pytest.raises(ValueError, match=match) as err:
        data.load_task("x", train_file=path, dev_file=dev)
    assert str(path) in str(err.value)


def test_user_file_missing_and_unknown_column(tmp_path):
    """A missing file or an unknown column is named, the latter with the available columns."""
    with pytest.raises(ValueError, match="file not found: .*nope.csv"):
        data.load_task("x", train_file=tmp_path / "nope.csv")
    path = _save(_frame(10), tmp_path / "t.csv")
    with pytest.raises(ValueError, match=r"unknown text_column 'review'; available columns: "
                                         r"text, label"):
        data.load_task("x", train_file=path, text_column="review")
    with pytest.raises(ValueError, match="unknown label_column 'y'"):
        data.load_task("x", train_file=path, label_column="y")
    dev = _save(_frame(4).rename(columns={"text": "body"}), tmp_path / "d.csv")
    with pytest.raises(ValueError, match=r"d\.csv: unknown text column 'text'; available "
                                         r"columns: body, label"):
        data.load_task("x", train_file=path, dev_file=dev)
    no_text = _save(pd.DataFrame({"body": ["a", "b"], "label": [0, 1]}), tmp_path / "n.csv")
    with pytest.raises(ValueError, match="no text column found; pass text_column"):
        data.load_task("x", train_file=no_text)


def test_user_file_other_faults(tmp_path):
    """Dev without shared labels, wrong type, dev without train, bad metrics."""
    train = _save(_frame(10, labels=("a", "b")), tmp_path / "t.csv")
    dev = _save(_frame(4, labels=("c", "d")), tmp_path / "d.csv")
    with pytest.raises(ValueError, match=r"d\.csv: label .* never occurs in the training file"):
        data.load_task("x", train_file=train, dev_file=dev)
    with pytest.raises(ValueError, match=r"unsupported file type '\.xlsx'"):
        data.load_task("x", train_file=_write(tmp_path / "t.xlsx", "x"))
    with pytest.raises(ValueError, match="dev_file was given without train_file"):
        data.load_task("x", dev_file=dev)
    with pytest.raises(ValueError, match="unknown metric 'f2'"):
        data.load_task("x", train_file=train, metric="f2")
    three = _save(_frame(30, labels=("a", "b", "c")), tmp_path / "three.csv")
    with pytest.raises(ValueError, match="'acc_f1' needs two classes"):
        data.load_task("x", train_file=three, metric="acc_f1")
    bad_json = _write(tmp_path / "b.jsonl", '{"text": "a", "label": 0}\n{broken\n')
    with pytest.raises(ValueError, match=r"b\.jsonl: cannot be read as jsonl"):
        data.load_task("x", train_file=bad_json)


def test_user_file_restore_after_change(tmp_path):
    """Restoring from a deleted or changed file fails with the file named."""
    path = _save(_frame(20), tmp_path / "t.csv")
    task = data.load_task("x", train_file=path)
    source = task.source("dev")
    _save(_frame(25), path)
    with pytest.raises(ValueError, match="has 25 rows but the cache was made from 20"):
        data.restore_texts(source)
    path.unlink()
    with pytest.raises(ValueError, match=f"file not found: {path}"):
        data.restore_texts(source)


# ------------------------------------------------------------ HF dataset folders and the hub

def _hf_dict(hf):
    """A DatasetDict with a ClassLabel, a validation split and an unlabeled test split."""
    features = hf.Features({"premise": hf.Value("string"), "hypothesis": hf.Value("string"),
                            "label": hf.ClassLabel(names=["yes", "no"])})
    def split(n, labels):
        return hf.Dataset.from_dict({"premise": [f"p{i}" for i in range(n)],
                                     "hypothesis": [f"h{i}" for i in range(n)],
                                     "label": labels}, features=features)
    return hf.DatasetDict({"train": split(10, [0, 1] * 5), "validation": split(4, [1, 0, 1, 1]),
                           "test": split(3, [-1, -1, -1])})


def test_saved_dataset_dict_folder(tmp_path, hf_cache):
    """A save_to_disk DatasetDict: ClassLabel names, validation as dev, pairs guessed, restore."""
    folder = tmp_path / "nli"
    _hf_dict(hf_cache).save_to_disk(str(folder))
    task = data.load_task(str(folder))
    assert (task.name, task.label_names, task.is_pair) == ("nli", ["yes", "no"], True)
    assert (len(task.train), len(task.dev)) == (10, 4)
    assert task.dev["label"].tolist() == [1, 0, 1, 1]
    source = task.source("dev")
    assert (source["kind"], source["hf_split"], source["path"]) == ("hf_folder", "validation",
                                                                   str(folder.resolve()))
    _round_trip(task, "dev")
    named = data.load_task("my_nli", data_dir=folder)
    assert named.name == "my_nli" and named.texts("dev") == task.texts("dev")


def test_saved_single_dataset_and_csv_folder(tmp_path, hf_cache):
    """A saved single Dataset is split; a folder of CSV files loads through load_dataset."""
    single = tmp_path / "single"
    hf_cache.Dataset.from_pandas(_frame(40)).save_to_disk(str(single))
    task = data.load_task(str(single))
    assert (len(task.train), len(task.dev)) == (36, 4) and task.label_names == ["neg", "pos"]
    assert task.source("dev")["hf_split"] == "train"
    _round_trip(task, "dev")
    files = tmp_path / "csvs"
    _save(_frame(12), files / "train.csv")
    _save(_frame(4), files / "validation.csv")
    task = data.load_task(str(files))
    assert (len(task.train), len(task.dev)) == (12, 4)
    _round_trip(task, "dev")


def test_dataset_folder_faults(tmp_path, hf_cache):
    """A folder that is no dataset, and a removed folder at restore time, are named."""
    _write(tmp_path / "junk" / "notes.md", "nothing here")
    with pytest.raises(ValueError, match="not a dataset folder"):
        data.load_task(str(tmp_path / "junk"))
    folder = tmp_path / "gone"
    _hf_dict(hf_cache).save_to_disk(str(folder))
    source = data.load_task(str(folder)).source("dev")
    for split in ("train", "validation", "test"):
        for f in (folder / split).iterdir():
            f.unlink()
        (folder / split).rmdir()
    (folder / "dataset_dict.json").unlink()
    folder.rmdir()
    with pytest.raises(ValueError, match=f"dataset folder not found: {folder.resolve()}"):
        data.restore_texts(source)


def test_hub_dataset_through_load_dataset(hf_cache, monkeypatch):
    """Hub names go to datasets.load_dataset (stubbed here: no network); test labels -1 skipped."""
    calls = []

    def fake_load(path, name=None, **kwargs):
        calls.append((path, name))
        return _hf_dict(hf_cache)

    monkeypatch.setattr(hf_cache, "load_dataset", fake_load)
    task = data.load_task("someone/nli:plain", text_column="premise", text_pair_column="hypothesis")
    assert calls[0] == ("someone/nli", "plain")
    assert task.name == "someone/nli:plain" and task.label_names == ["yes", "no"]
    source = task.source("dev")
    assert (source["kind"], source["hf_split"], source["config"]) == ("hub", "validation", "plain")
    _round_trip(task, "dev")


def test_unknown_task_lists_builtins(hf_cache, monkeypatch):
    """A name that is nothing known fails with the built-in names and a suggestion."""
    def fail(*args, **kwargs):
        raise FileNotFoundError("Dataset 'sst3' doesn't exist on the Hub")

    monkeypatch.setattr(hf_cache, "load_dataset", fail)
    with pytest.raises(ValueError, match="unknown task 'movie_revues'") as err:
        data.load_task("movie_revues")
    for name in ("rotten_tomatoes", "sst2", "mrpc", "rte", "cola", "qnli", "qqp", "mnli"):
        assert name in str(err.value)
    assert "loading it from the Hugging Face hub failed" in str(err.value)


def test_mistyped_builtin_fails_without_the_hub(monkeypatch):
    """A near-miss of a built-in name fails at once with a suggestion, never asking the hub."""
    monkeypatch.setattr(hub, "_load_hub", lambda *a: pytest.fail("the hub was asked"))
    with pytest.raises(ValueError, match="unknown task 'sst3': did you mean 'sst2'") as err:
        data.load_task("sst3")
    assert "rotten_tomatoes, sst2, mrpc" in str(err.value)
    with pytest.raises(ValueError, match="did you mean 'rotten_tomatoes'"):
        data.load_task("rotten_tomato")
