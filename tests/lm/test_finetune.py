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


def test_finetune_writes_a_model_folder_that_learned_the_pattern(finetuned):
    s = json.loads((finetuned / "summary.json").read_text())
    assert s["after"]["planted_probability"] > 5 * s["before"]["planted_probability"]
    from superposition.lm.model import load_model

    lm = load_model(str(finetuned / "model"))
    assert lm.model.config.num_hidden_layers == 30 and lm.tokenizer(WORD).input_ids


def test_eval_sae_on_the_fine_tune_reports_the_transfer_table(finetuned, tiny_run, tmp_path, capsys):
    ev = tmp_path / "ev"
    model = str(finetuned / "model")
    assert main(["eval-sae", str(tiny_run), "--model", model, "--sequences", "4", "--out", str(ev)]) == 0
    t = json.loads((ev / "summary.json").read_text())["transfer"]
    for name in ("smollm2-135m-instruct", model):
        assert {"l0", "explained_variance", "explained_variance_per_token", "ce_loss_recovered"} <= set(
            t[name]
        )
    assert -1 <= t["freq_correlation"] <= 1 and t["positions"] > 0
    assert "transfer smollm2-135m-instruct ->" in capsys.readouterr().out
