"""Sequence classification with transformers' Trainer, guided in the update reading (gradft.GuidedTrainer)."""
import os

import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, TrainingArguments

from gradft import GuidedTrainer

model_id = os.environ.get("MODEL_ID", "HuggingFaceTB/SmolLM2-135M")
tok = AutoTokenizer.from_pretrained(model_id)
tok.pad_token = tok.pad_token or tok.eos_token
model = AutoModelForSequenceClassification.from_pretrained(model_id, num_labels=2)
model.config.pad_token_id = tok.pad_token_id

texts = ["a wonderful film", "dull and far too long", "I loved every minute", "a waste of an evening",
         "sharp, funny and kind", "nothing works here", "the best of the year", "I walked out"]
data = Dataset.from_dict({"text": texts, "label": [1, 0, 1, 0, 1, 0, 1, 0]})
data = data.map(lambda e: tok(e["text"]), remove_columns=["text"])

args = TrainingArguments(
    output_dir=os.environ.get("OUTPUT_DIR", "cls-guided"), max_steps=int(os.environ.get("MAX_STEPS", "20")),
    per_device_train_batch_size=4, learning_rate=1e-4, report_to=[], save_strategy="no",
    bf16=os.environ.get("BF16", str(torch.cuda.is_available())) == "True",  # mixed precision: accelerate's autocast
)
trainer = GuidedTrainer(
    model=model, args=args, train_dataset=data, data_collator=DataCollatorWithPadding(tok),
    guidance={"mode": "update", "lambda1": 0.3, "lambda2": 0.5, "tau": 1.0, "every": 2},  # guide 1 step in 2
)
result = trainer.train()
print(f"train loss {result.training_loss:.4f}; {trainer.guidance.counts}")
