"""Data-parallel SAE training on 2 gloo processes (CPU) against one process: a step equals the
single-process step on the concatenated batch, fired latents are the OR over ranks, and b_dec
starts at the statistic of every rank's rows."""

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from superposition.dist import Comm, shard
from superposition.sae import SAEConfig, make_sae
from superposition.sae.train import SAETrainConfig, SAETrainer

pytestmark = pytest.mark.alone  # several processes at once: make test runs these after the rest

D, M, BATCH = 12, 32, 64


class Rows:
    """The rows of X in order (cycling), this rank's share of each batch."""

    def __init__(self, X, comm):
        self.X, self.comm, self.pos = X, comm, 0

    def sample(self, n, generator=None):
        idx = torch.arange(self.pos, self.pos + n) % self.X.shape[0]
        self.pos += n
        return self.X[idx][shard(n, self.comm)]


def _data():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(4096 + 8 * BATCH, D, generator=g) * torch.linspace(0.5, 3, D) + 2.0
    return X


def _train(comm, arch, steps, b_dec_init="geometric_median"):
    cfg = SAEConfig(architecture=arch, d_in=D, d_sae=M, k=4, l1_coefficient=1e-2)
    sae = make_sae(cfg, torch.Generator().manual_seed(1))
    tcfg = SAETrainConfig(steps=steps, batch_size=BATCH, lr=3e-3, b_dec_init=b_dec_init,
                          normalize_activations=True, log_every=1, dead_feature_window=1)  # fmt: skip
    trainer = SAETrainer(sae, Rows(_data(), comm), tcfg, comm=comm)
    trainer.initialise()
    init = {k: v.detach().clone() for k, v in sae.state_dict().items()}
    trainer.train(progress=False)
    return trainer, init


def _worker(rank, world, init_file, out, arch, steps):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        trainer, init = _train(Comm(rank, world), arch, steps)
        tensors = {f"final.{k}": v.contiguous() for k, v in trainer.sae.state_dict().items()}
        tensors.update({f"init.{k}": v.contiguous() for k, v in init.items()})
        tensors["since_fired"] = trainer.since_fired
        tensors["scale"] = trainer.scale
        save_file(tensors, f"{out}/rank{rank}.safetensors")
    finally:
        dist.destroy_process_group()


def _distributed(tmp_path, arch, steps):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path), arch, steps), nprocs=2, join=True)
    return [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(2)]


@pytest.mark.parametrize("arch, steps", [("standard", 1), ("topk", 1), ("standard", 6)])
def test_a_data_parallel_step_equals_one_process_on_the_whole_batch(tmp_path, arch, steps):
    ranks = _distributed(tmp_path, arch, steps)
    single, init = _train(Comm.single(), arch, steps)
    for key, value in single.sae.state_dict().items():
        for r in ranks:  # every rank holds the same weights, and they are one process's
            torch.testing.assert_close(r[f"final.{key}"], value, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(r[f"init.{key}"], init[key], rtol=1e-6, atol=1e-6)
    # the initialisation statistics are those of every rank's rows, not of one rank's half
    torch.testing.assert_close(ranks[1]["scale"], single.scale)
    torch.testing.assert_close(ranks[0]["init.b_dec"], init["b_dec"])
    half = _data()[: 4096 // 2] * single.scale[0]
    assert (half.median(0).values - init["b_dec"][0]).abs().max() > 1e-3  # a check that could fail
    torch.testing.assert_close(ranks[0]["since_fired"], single.since_fired)


def test_fired_latents_are_the_or_over_ranks(tmp_path):
    """dead_feature_window=1: since_fired is 0 exactly for latents that fired in the last step on
    any rank's rows. A latent that fires only on rank 1's half still counts as fired on rank 0."""
    ranks = _distributed(tmp_path, "topk", 1)
    fired0 = ranks[0]["since_fired"] == 0
    assert torch.equal(fired0, ranks[1]["since_fired"] == 0)
    single, _ = _train(Comm.single(), "topk", 1)
    assert torch.equal(fired0, single.since_fired == 0)
    # recompute what each rank's half of that step fired (the step ran from the initial weights)
    sae = make_sae(SAEConfig(architecture="topk", d_in=D, d_sae=M, k=4))
    sae.load_state_dict({k[len("init.") :]: v for k, v in ranks[0].items() if k.startswith("init.")})
    x = _data()[4096 : 4096 + BATCH] * ranks[0]["scale"][0]
    with torch.no_grad():
        halves = [
            (sae.encode(x[:32].unsqueeze(1))[:, 0] != 0).any(0),
            (sae.encode(x[32:].unsqueeze(1))[:, 0] != 0).any(0),
        ]
    assert torch.equal(fired0[0], halves[0] | halves[1])
    assert not torch.equal(halves[0], halves[1])  # each half alone would have missed some
