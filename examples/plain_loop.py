"""Structured guidance in a plain PyTorch loop: any nn.Module, any batch type, a loss closure."""
import torch
from torch import nn

from gradft import Guidance

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 3))
data = [(torch.randn(8, 16), torch.randint(0, 3, (8,))) for _ in range(10)]  # batches of (x, y)


def loss_fn(model, batch):  # a scalar, the mean over the batch
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


guide = Guidance(model, loss_fn, mode="hessian", lambda1=0.1, lambda2=0.1, tau=1.0)  # or mode="update"
opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
for _epoch in range(3):
    for batch in data:
        loss = guide.step_gradient(batch)  # sets .grad to g + H·v (replacing what was there)
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
print(f"loss {loss:.4f}; {guide.counts}")
