"""Every `superposition` command: a typed options object and `run(opts, out) -> Result` each,
registered in `COMMANDS` (commands/base.py). The CLI builds its flags and help from the options;
notebooks call the same code through `execute` or the Python forms (`build_dashboard`, ...).

A new command costs one module and one line below.
"""
# ruff: noqa: F401

# Importing a module registers its command(s).
from superposition.commands import (
    analyze,
    attribute,
    autointerp,
    circuit,
    compare_saes,
    convert,
    dashboard,
    eval_sae,
    finetune,
    intervene,
    meta_sae,
    push,
    run,
    self_explain,
    train_sae,
)
from superposition.commands.base import COMMANDS, Command, execute

__all__ = ["COMMANDS", "Command", "execute"]
