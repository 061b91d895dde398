"""Model folders other tools read right (lm/model.write_model_folder): what transformers 5's own
save_pretrained leaves out, and transformers 4.x then gets wrong without an error, is written; the
folder loads back to the same logits. benchmarks/check_circuit_tracer.py loads the same folders
with transformers 4.57 (circuit-tracer's pin) and compares the logits."""

import json

import torch
from safetensors import safe_open

from superposition.lm.model import PORTABLE, write_model_folder


def _tied_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                      rope_theta=100000.0, max_position_embeddings=64)  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(64)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0", bos_token="w1", eos_token="w2")


def test_a_written_folder_says_what_transformers_4_needs(tmp_path):
    model, tok = _tied_llama(), _tokenizer()
    write_model_folder(model, tok, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert cfg["rope_theta"] == 100000.0  # 4.x reads it here (else 10000, silently)
    assert cfg["torch_dtype"] == "float32" and (tmp_path / "m" / PORTABLE).is_file()
    with safe_open(str(tmp_path / "m" / "model.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}
        names = set(f.keys())  # noqa: SIM118
        embed, head = f.get_tensor("model.embed_tokens.weight"), f.get_tensor("lm_head.weight")
    assert len(names) == len(model.state_dict())
    assert torch.equal(embed, head) and torch.equal(embed, model.model.embed_tokens.weight)
    tcfg = json.loads((tmp_path / "m" / "tokenizer_config.json").read_text())
    assert tcfg["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_a_written_folder_loads_to_the_same_logits(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = _tied_llama(), _tokenizer()
    write_model_folder(model, tok, tmp_path / "m")
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    ids = torch.tensor([[1, 5, 9, 33, 7]])
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, model(ids).logits, rtol=0, atol=0)
    tok2 = AutoTokenizer.from_pretrained(tmp_path / "m")
    assert tok2("w5 w9 w33").input_ids == tok("w5 w9 w33").input_ids
