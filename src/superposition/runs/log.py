"""A train-sae run's training log: log.jsonl and log.csv (a row per logged step, and per hook in a
multi-hook run), TensorBoard and W&B when enabled. `mse` is the squared error summed over the
activation's dimensions, mean over tokens, in the model's units (as summary.json's), whatever the
training normalisation; a dictionary of several sources sums it over them."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import torch

from superposition.atomic import atomic_write_text
from superposition.errors import SuperpositionError
from superposition.lm.config import LMSAEConfig
from superposition.runs.evaluate import read_log
from superposition.sae.dictionary import SourceDictionary
from superposition.sae.metrics import explained_variance

LOG_KEYS = [
    "step", "hook_name", "tokens", "lr", "mse", "l0", "explained_variance", "auxk", "l1", "kl",
    "downstream_mse", "fvu", "dead", "tokens_per_s",
]  # fmt: skip
EXTRA_TERMS = ("auxk", "l1", "kl", "downstream_mse", "fvu", "dead")  # a loss's own terms, when it has them


class RunLogger:
    """Training metrics to log.jsonl and log.csv, and to TensorBoard / W&B when available."""

    def __init__(
        self,
        out: Path,
        cfg: LMSAEConfig,
        resume_step: int | None,
        hooks: list[str] | None = None,
        rank: int = 0,
    ) -> None:
        """resume_step: the step a resumed run continues from; rows logged at or after it (by the
        interrupted process, after its last checkpoint) are dropped, since those steps run again.
        hooks: a multi-hook run's hooks, one per SAE instance (a row per hook and step). A
        hook-parallel rank r > 0 logs its own hooks to log.rank<r>.jsonl / .csv."""
        self.out, self.cfg, self.hooks = out, cfg, hooks
        stem = "log" if rank == 0 else f"log.rank{rank}"
        jsonl, table_path = out / f"{stem}.jsonl", out / f"{stem}.csv"
        rows = (
            [r for r in read_log(jsonl) if r.get("step", 0) < resume_step] if resume_step is not None else []
        )
        # the kept rows replace both logs atomically (a kill here must not lose them); then append
        atomic_write_text(jsonl, "".join(json.dumps(r) + "\n" for r in rows))
        table = io.StringIO()
        writer = csv.DictWriter(table, LOG_KEYS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(table_path, table.getvalue())
        # line-buffered: every row reaches the file at once, so a killed run keeps its log
        self.jsonl = open(jsonl, "a", buffering=1)
        self.csv_file = open(table_path, "a", newline="", buffering=1)
        self.csv = csv.DictWriter(self.csv_file, LOG_KEYS, extrasaction="ignore")
        self.tb = None
        if cfg.tensorboard and rank == 0:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:  # tensorboard is optional
                self.tb = None
        self.wandb = None
        if cfg.wandb:
            try:
                import wandb
            except ImportError:
                raise SuperpositionError(
                    "wandb: enabled but the wandb package is not installed (pip install wandb)"
                ) from None
            self.wandb = wandb.init(
                project=cfg.wandb_project, config=cfg.model_dump(), dir=str(out), resume="allow"
            )
        # the rate counts from here (the step the run starts or resumes at), so the first row has one
        self.t0, self.tokens0 = time.time(), (resume_step or 0) * cfg.batch_size_tokens
        self.trainer = None  # the SAE trainer: its learning rate, and the normalisation the mse is undone by

    def __call__(self, step: int, x, out) -> dict:
        cfg = self.cfg
        tokens = (step + 1) * cfg.batch_size_tokens
        rate = (tokens - self.tokens0) / max(time.time() - self.t0, 1e-9)
        tr = self.trainer
        lr = tr.opt.param_groups[0]["lr"] if tr is not None else float("nan")
        if tr is not None and isinstance(tr.sae, SourceDictionary):
            return self._dictionary_row(step, tokens, lr, rate, x, out, tr.sae)
        evs = explained_variance(x.float(), out.x_hat.float())
        # the trainer's mse is of normalised activations: in the model's units, as summary.json's
        unscale = (1 / tr.out_scale.squeeze(-1).square()) if tr is not None else torch.ones(len(evs))
        for i, hook in enumerate(self.hooks or [None]):
            l0 = out.l0[i].item() if out.l0 is not None else (out.z[:, i] != 0).sum(-1).float().mean().item()
            row = {
                "step": step,
                **({"hook_name": hook} if hook else {}),
                "tokens": tokens,
                "lr": lr,
                "mse": (out.terms["mse"][i] * unscale[i]).item(),
                "l0": l0,
                "explained_variance": evs[i].item(),
                "tokens_per_s": rate,
            }
            for key in EXTRA_TERMS:
                if key in out.terms:
                    row[key] = out.terms[key][i].item()
            self._write(row, step, tokens, hook)
        first = out.l0[0].item() if out.l0 is not None else (out.z[:, 0] != 0).sum(-1).float().mean().item()
        return {"tok/s": f"{rate:,.0f}", "L0": f"{first:.1f}", "EV": f"{evs[0].item():.3f}"}

    def _dictionary_row(self, step, tokens, lr, rate, y, out, dictionary) -> dict:
        """One row for a dictionary of several sources (a CLT's layers, a crosscoder's sources): its
        mse summed over them in the model's units, and the mean of their explained variances."""
        y, y_hat = y.float(), out.x_hat.float()
        per_source = (y - y_hat).square().sum(-1).mean(0) / dictionary.target_scale().square().to(y.device)
        ev = explained_variance(y, y_hat).mean()
        row = {"step": step, "tokens": tokens, "lr": lr, "mse": float(per_source.sum()),
               "l0": out.l0[0].item(), "explained_variance": float(ev), "tokens_per_s": rate}  # fmt: skip
        for key in EXTRA_TERMS:
            if key in out.terms:
                row[key] = out.terms[key][0].item()
        self._write(row, step, tokens, None)
        return {"tok/s": f"{rate:,.0f}", "L0": f"{row['l0']:.1f}", "EV": f"{float(ev):.3f}"}

    def _write(self, row: dict, step: int, tokens: int, hook: str | None) -> None:
        self.jsonl.write(json.dumps(row) + "\n")
        self.csv.writerow(row)
        tag = f"{hook}/" if hook else ""
        if self.tb is not None:
            for k, v in row.items():
                if k not in ("step", "tokens", "hook_name"):
                    self.tb.add_scalar(f"train/{tag}{k}", v, tokens)
        if self.wandb is not None:
            self.wandb.log({f"{tag}{k}": v for k, v in row.items() if k != "hook_name"}, step=step)

    def close(self) -> None:
        self.jsonl.close()
        self.csv_file.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
