"""What the server of tests/forked.py imports once, before it forks each command: the CLI, the
figures' library (with the CLI's backend) and what opening a Llama or GPT-2 model imports."""

import matplotlib

matplotlib.use("Agg")  # as the CLI does

import matplotlib.pyplot  # noqa: E402, F401
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel, LlamaForCausalLM  # noqa: E402, F401

import superposition.cli  # noqa: E402, F401
import superposition.lm.model  # noqa: E402, F401
