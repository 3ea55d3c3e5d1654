"""The paper preset's data without a network: a local copy named by $CIRCUITS_DATA or --data, the embedded
stand-in, and a clear error when neither a copy nor the hub is there."""

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from circuits.config import DATA_ENV, get_preset
from circuits.data.corpus import load_corpus

TEXTS = [f"Document number {i}. " * 20 for i in range(60)]


def test_no_copy_and_no_hub_names_both_ways(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"no local copy was named.*CIRCUITS_DATA=.*--data.*CIRCUITS_DATA=embedded"):
        load_corpus("openwebtext")
    with pytest.raises(FileNotFoundError, match="no local copy of OpenWebText at /no/such/place"):
        load_corpus("openwebtext", path="/no/such/place")


@pytest.mark.parametrize("layout", ["parquet-file", "parquet-folder", "text-folder", "saved-dataset"])
def test_local_copies_load(tmp_path, layout):
    if layout == "parquet-file":
        path = tmp_path / "owt.parquet"
        pq.write_table(pa.table({"text": TEXTS}), path)
    elif layout == "parquet-folder":
        path = tmp_path / "owt"
        path.mkdir()
        for part in range(3):
            pq.write_table(pa.table({"text": TEXTS[part::3]}), path / f"part-{part}.parquet")
    elif layout == "text-folder":  # OpenWebText's own archive: one document per text file
        path = tmp_path / "owt"
        path.mkdir()
        for i, text in enumerate(TEXTS):
            (path / f"{i:04d}.txt").write_text(text + "\nsecond line\n")
    else:
        path = tmp_path / "owt"
        datasets.Dataset.from_dict({"text": TEXTS}).save_to_disk(str(path))
    splits = load_corpus("openwebtext", path=path, validation_fraction=0.2)
    n = len(splits["train"]) + len(splits["validation"])
    assert n == len(TEXTS) and len(splits["validation"]) > 0
    assert "doc_id" in splits["train"].column_names
    if layout == "text-folder":
        assert splits["train"][0]["text"].endswith("second line\n")  # a whole file is one document


def test_mixed_or_unknown_files_are_named(tmp_path):
    (tmp_path / "a.parquet").write_bytes(b"")
    (tmp_path / "b.txt").write_text("x")
    with pytest.raises(ValueError, match="expected one kind of"):
        load_corpus("openwebtext", path=tmp_path)


def test_presets_take_their_data_from_the_option_or_the_environment(monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)
    paper = get_preset("paper")
    assert paper.data.corpus == "openwebtext" and paper.data.path is None
    standin = get_preset("paper", "embedded")
    assert standin.name == "paper-embedded" and standin.data.corpus == "embedded" and standin.data.tokenizer == "gpt2"
    local = get_preset("paper", "/data/owt")
    assert local.name == "paper" and local.data.path == "/data/owt"  # the same data: the same runs
    monkeypatch.setenv(DATA_ENV, "embedded")
    assert get_preset("paper").name == "paper-embedded"
    assert get_preset("cpu").name == "cpu"  # the cpu preset's own data already
