"""Two-process DDP on CPU (gloo over 127.0.0.1): ranks see different images but keep identical weights."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_training_utils import make_world, micro_recipe

from disam_ros.training.trainer import Trainer


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), GLOO_SOCKET_IFNAME="lo")
    r = micro_recipe("coarse", "steps=3", "threads=1", "hard_negatives_from=0.5", "pool_size=2", "device=cpu")
    t = Trainer(r, root, out)
    assert t.info.world == world and t.info.rank == rank
    first = [k.n for k in next(iter(_sampler_keys(t)))]
    t.fit()
    torch.save({"state": t.net.state_dict(), "first_batch": first}, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


def _sampler_keys(t: Trainer):
    from disam_ros.training.datasets import PairBatchSampler

    return PairBatchSampler(len(t.dataset), len(t.cfg.domains), t.recipe.train.batch_size, t.recipe.seed, 0, 1, 99,
                            t.info.rank, t.info.world)


def test_two_rank_gloo_training_keeps_parameters_identical(tmp_path):
    root = make_world(tmp_path / "world", places=16)
    out = tmp_path / "run"
    mp.spawn(_worker, args=(2, _free_port(), str(root), str(out)), nprocs=2, join=True)
    r0, r1 = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    assert not set(r0["first_batch"]) & set(r1["first_batch"])  # DistributedSampler: disjoint images
    a, b = r0["state"], r1["state"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(0)  # the recipe seed: what every rank started from
    from disam_ros.model import DisamNet, preset

    init = DisamNet(preset("micro", ("night", "snow", "sunny"))).state_dict()
    assert any(not torch.equal(a[k], init[k]) for k in a)
    assert (out / "model.pt").is_file() and (out / "checkpoints" / "last.pt").is_file()  # rank 0 wrote them
