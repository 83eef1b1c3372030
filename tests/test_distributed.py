"""Data-parallel and accumulated guided steps (issue 29): 2 gloo processes on halves of a global batch end with the
parameters of 1 process on the whole batch, in both readings; accumulating 2 micro-batches is one step on their
union. float64 tiny BERT, eval mode (no dropout: the two layouts would draw different masks)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from gradft.api import Guidance
from gradft.forward import slice_examples, task_loss
from tests.test_guidance import tiny

STEPS = 4
OPTIONS = {  # a plain warm-up step (DDP's own all-reduce), then guided steps with every term that needs no source
    "hessian": dict(mode="hessian", lambda1=0.5, lambda2=0.5, tau=0.5, warmup=1, max_hv_ratio=None),
    "update": dict(mode="update", lambda1=0.5, lambda2=0.5, tau=0.5, warmup=1),
}
ESTIMATORS = {  # accumulation only (one process): the other H·v estimators over micro-batches
    "central": dict(OPTIONS["hessian"], hvp="central"),
    "double_backward": dict(OPTIONS["hessian"], hvp="double_backward"),
}


def global_batch(tok, step: int) -> dict:
    g = torch.Generator().manual_seed(100 + step)
    ids = torch.randint(1000, 5000, (8, 12), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 3, (8,), generator=g)}


def train(mode: str, rank: int = 0, world: int = 1, micro: int = 1, reduce="auto") -> torch.Tensor:
    """STEPS guided steps of SGD; this rank's share of each global batch (``world`` ranks), in ``micro`` pieces."""
    model, tok = tiny("full", seed=0)
    model.eval()
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    guide = Guidance(net, task_loss, reduce=reduce, **{**OPTIONS, **ESTIMATORS}[mode])
    opt = torch.optim.SGD(guide.space.params, lr=0.5)
    for step in range(STEPS):
        share = 8 // world
        b = slice_examples(global_batch(tok, step), rank * share, (rank + 1) * share)
        if micro == 1:
            guide.step_gradient(b)
        else:
            k = share // micro
            guide.step_gradient(micro_batches=[slice_examples(b, i * k, (i + 1) * k) for i in range(micro)])
        opt.step()
    assert guide.counts["guided_steps"] == STEPS - 1
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        res = {mode: train(mode, rank, world) for mode in OPTIONS}
        res["hessian_no_allreduce"] = train("hessian", rank, world, reduce=None)
        torch.save(res, f"{out}/rank{rank}.pt")
        torch.distributed.barrier()  # leave together: gloo torn down under a rank still talking aborts it
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict[str, torch.Tensor]]:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


@pytest.mark.parametrize("mode", list(OPTIONS))
def test_two_gloo_ranks_end_with_the_parameters_of_one_process_on_the_global_batch(two_ranks, mode):
    single = train(mode)
    start = torch.cat([p.detach().reshape(-1) for p in tiny("full", seed=0)[0].parameters()])
    assert float((single - start).abs().max()) > 1e-3  # the steps moved the parameters
    for rank in two_ranks:
        diff = float((rank[mode] - single).abs().max())
        print(f"{mode}: max |θ_2proc − θ_1proc| = {diff:.3e}")
        assert diff < 1e-9  # float64; the finite difference (r = 1e-4) scales summation-order round-off by 1e4
    assert torch.equal(two_ranks[0][mode], two_ranks[1][mode])  # the ranks stay in lockstep


def test_without_the_all_reduce_the_guided_ranks_drift_apart(two_ranks):
    """The check above is sensitive: guidance from each rank's local gradient gives other parameters."""
    single = train("hessian")
    assert float((two_ranks[0]["hessian_no_allreduce"] - two_ranks[1]["hessian_no_allreduce"]).abs().max()) > 1e-6
    assert float((two_ranks[0]["hessian_no_allreduce"] - single).abs().max()) > 1e-6


@pytest.mark.parametrize("mode", [*OPTIONS, *ESTIMATORS])
def test_accumulating_two_micro_batches_is_one_guided_step_on_their_union(mode):
    diff = float((train(mode, micro=2) - train(mode)).abs().max())
    assert diff < 1e-9, diff
