"""Fine-tuning (chapters 6 and 7, appendix E) and beyond: classifiers, instruction following, LoRA,
preference tuning (DPO) and reinforcement learning with verifiable rewards (GRPO).

* `classifier.py` - a language model with a class head, read at the last real token;
* `lora.py` - low-rank adapters, their training, saving and merging;
* `instruct.py` - instruction fine-tuning and scoring the answers;
* `sequences.py` - prompt + answer rows and the log-probability of every answer token (DPO, GRPO);
* `dpo.py` - Direct Preference Optimization: its loss, and preference pairs on disk;
* `grpo.py` - Group Relative Policy Optimization: group advantages and the clipped loss.

Every one of them trains through the project's one training loop (`training/trainer.py`). The
stages that put these together (`llmfs finetune dpo|grpo`) are `pipelines/dpo.py` and
`pipelines/grpo.py`: there DPO and GRPO are *methods* of that loop (`training/method.py`).
"""
