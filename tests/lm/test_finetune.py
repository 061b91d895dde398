"""`finetune`: a fine-tune saved as a model folder that every command reads as `--model`, which
learns the planted pattern."""

import json

from superposition.cli import main
from superposition.commands.finetune import WORD, planted_texts


def test_planted_sentences_end_in_the_word_and_held_out_frames_are_new():
    train, held = planted_texts(0), planted_texts(0, held_out=True)
    assert all(t.endswith(WORD + ".") for t in train + held)
    assert all(t.startswith("Note that the password of") for t in held)
    assert not any(t.startswith("Note that") for t in train) and (len(train), len(held)) == (48, 12)


def test_finetune_writes_a_model_folder_that_learned_the_pattern(tmp_path, capsys):
    out = tmp_path / "ft"
    args = ["finetune", "--out", str(out), "--steps", "3", "--batch-size", "4", "--context-size", "24",
            "--lr", "3e-4", "--mix", "0"]  # fmt: skip
    assert main(args) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["after"]["planted_probability"] > 5 * s["before"]["planted_probability"]
    from superposition.lm.model import load_model

    lm = load_model(str(out / "model"))
    assert lm.model.config.num_hidden_layers == 30 and lm.tokenizer(WORD).input_ids
