"""Text sources, packing and the held-out split."""

import json

import pytest
import torch

from superposition.errors import SuperpositionError
from superposition.lm.data import HOLDOUT, packed_sequences, python_docs, special_mask, split_sequences, texts


def test_python_docs_is_real_english_prose():
    docs = list(python_docs())
    text = " ".join(docs)
    assert len(text) > 500_000
    words = text.lower().split()
    # English function words are common in prose and rare in code
    share = sum(words.count(w) for w in ("the", "of", "and", "is", "to", "a")) / len(words)
    assert share > 0.10
    assert "def " not in docs[0] and docs == list(python_docs())  # deterministic order


class _CharTokenizer:
    """Token = character code + 10; 1 is BOS, 2 is EOS."""

    bos_token_id, eos_token_id, all_special_ids = 1, 2, [1, 2]

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) + 10 for c in text]}


def test_packing_joins_documents_with_eos_and_prepends_bos():
    tok = _CharTokenizer()
    seqs = list(packed_sequences(tok, iter(["abcd", "efg", "hijklmn"]), context_size=5, prepend_bos=True))
    flat = [t for s in seqs for t in s[1:].tolist()]
    expected = (
        [ord(c) + 10 for c in "abcd"]
        + [2]
        + [ord(c) + 10 for c in "efg"]
        + [2]
        + [ord(c) + 10 for c in "hijklmn"]
        + [2]
    )
    assert all(s.shape == (5,) and s[0] == 1 for s in seqs)
    assert flat == expected[: len(flat)] and len(flat) == 4 * (len(expected) // 4)
    no_bos = list(packed_sequences(tok, iter(["abcd", "efg"]), context_size=3, prepend_bos=False))
    assert [s.tolist() for s in no_bos] == [[107, 108, 109], [110, 2, 111], [112, 113, 2]]


def test_special_tokens_are_masked_and_holdout_is_every_20th():
    tok = _CharTokenizer()
    assert special_mask(tok, torch.tensor([[1, 50, 2, 60]])).tolist() == [[True, False, True, False]]
    seqs = [torch.tensor([i]) for i in range(100)]
    held = [int(s) for s in split_sequences(iter(seqs), holdout=True)]
    train = [int(s) for s in split_sequences(iter(seqs), holdout=False)]
    assert held == list(range(HOLDOUT - 1, 100, HOLDOUT)) and len(train) == 95 and not set(held) & set(train)


def test_local_files(tmp_path):
    (tmp_path / "a.txt").write_text("First paragraph\nstill first.\n\nSecond one.\n")
    assert list(texts(str(tmp_path / "a.txt"))) == ["First paragraph\nstill first.\n", "Second one.\n"]
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"content": "hello"}) + "\n\n" + json.dumps({"content": "world"}) + "\n"
    )
    assert list(texts(str(tmp_path / "b.jsonl"))) == ["hello", "world"]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": [1, 2], "text": ["one", "two"]}), tmp_path / "c.parquet")
    assert list(texts(str(tmp_path / "c.parquet"))) == ["one", "two"]


def test_a_dataset_without_a_text_column_is_one_line_error(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"title": "x", "n": 1}) + "\n")
    with pytest.raises(
        SuperpositionError, match=r"no text column \(text or content or document or body\); columns: title, n"
    ):
        list(texts(str(tmp_path / "d.jsonl")))
    with pytest.raises(SuperpositionError, match="no file at"):
        list(texts(str(tmp_path / "missing.txt")))
