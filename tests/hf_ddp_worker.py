"""One process of ``tests/test_api.py``'s DDP check: GuidedTrainer on a tiny Llama + LoRA, run under torchrun (or
alone); saves this rank's LoRA weights. Usage: python -m torch.distributed.run … tests/hf_ddp_worker.py DIR OUT B"""

import sys
from pathlib import Path

import torch

from tests.test_api import _lora, _sft_trainer

if __name__ == "__main__":
    model_dir, out, batch = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    trainer = _sft_trainer(model_dir, out / "run", batch=batch, accum=1)
    trainer.train()
    assert trainer.guidance.counts["guided_steps"] == 2
    torch.save(_lora(trainer), out / f"lora{trainer.args.process_index}.pt")
