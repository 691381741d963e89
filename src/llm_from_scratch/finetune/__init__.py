"""Fine-tuning (chapters 6 and 7, appendix E): classifiers, instruction following, LoRA.

* `classifier.py` - a language model with a class head, read at the last real token;
* `lora.py` - low-rank adapters, their training, saving and merging;
* `instruct.py` - instruction fine-tuning and scoring the answers.
"""
