"""Data-parallel guided training: torchrun --nproc_per_node=2 examples/ddp_torchrun.py (gloo on CPU, nccl on GPUs)."""
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from gradft import Guidance

cuda = torch.cuda.is_available()
dist.init_process_group("nccl" if cuda else "gloo")
rank, world = dist.get_rank(), dist.get_world_size()
device = torch.device(f"cuda:{os.environ['LOCAL_RANK']}" if cuda else "cpu")
torch.manual_seed(0)  # the same initial weights on every rank
model = DistributedDataParallel(nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 3)).to(device))


def loss_fn(model, batch):
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


guide = Guidance(model, loss_fn, mode="hessian", lambda1=0.1, lambda2=0.1)  # averages g, H·v over the ranks
opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
gen = torch.Generator().manual_seed(1)
for _step in range(10):
    x, y = torch.randn(8 * world, 16, generator=gen), torch.randint(0, 3, (8 * world,), generator=gen)
    mine = slice(8 * rank, 8 * (rank + 1))  # this rank's share of the global batch
    loss = guide.step_gradient((x[mine].to(device), y[mine].to(device)))
    opt.step()
flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
copies = [torch.empty_like(flat) for _ in range(world)]
dist.all_gather(copies, flat)
if rank == 0:
    agree = all(torch.equal(c, flat) for c in copies)
    print(f"{world} ranks, {guide.counts['guided_steps']} guided steps: ranks agree: {agree}")
dist.barrier()  # leave together: a rank that tears gloo down while another still talks aborts ("terminate called")
dist.destroy_process_group()
