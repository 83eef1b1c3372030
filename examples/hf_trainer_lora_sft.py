"""Causal-LM SFT with a peft LoRA adapter and transformers' Trainer, guided (gradft.GuidedTrainer)."""
import os

import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling, TrainingArguments

from gradft import GuidedTrainer

model_id = os.environ.get("MODEL_ID", "HuggingFaceTB/SmolLM2-135M")
tok = AutoTokenizer.from_pretrained(model_id)
tok.pad_token = tok.pad_token or tok.eos_token
model = AutoModelForCausalLM.from_pretrained(model_id)
lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
model = get_peft_model(model, lora)

pairs = [("What is 2 + 2?", "4"), ("Name a primary colour.", "Red"), ("Opposite of hot?", "Cold"),
         ("Capital of France?", "Paris"), ("What do bees make?", "Honey"), ("Plural of mouse?", "Mice"),
         ("Freezing point of water in C?", "0"), ("How many legs has a spider?", "Eight")]
texts = [f"Question: {q}\nAnswer: {a}{tok.eos_token}" for q, a in pairs]
data = Dataset.from_dict({"text": texts}).map(lambda e: tok(e["text"]), remove_columns=["text"])

args = TrainingArguments(
    output_dir=os.environ.get("OUTPUT_DIR", "sft-guided"), max_steps=int(os.environ.get("MAX_STEPS", "20")),
    per_device_train_batch_size=2, gradient_accumulation_steps=2,  # the guided step spans the whole window
    learning_rate=1e-3, bf16=torch.cuda.is_available(), report_to=[], logging_steps=5, save_strategy="no",
)
trainer = GuidedTrainer(
    model=model, args=args, train_dataset=data,
    data_collator=DataCollatorForLanguageModeling(tok, mlm=False),  # labels = input ids; the model's own loss
    guidance={"mode": "hessian", "lambda1": 0.1, "lambda2": 0.1, "tau": 1.0},
)
result = trainer.train()
print(f"train loss {result.training_loss:.4f}; {trainer.guidance.counts}")
