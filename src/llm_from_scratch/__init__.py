"""llm-from-scratch: build, train, fine-tune and serve GPT-style language models from first principles."""

__version__ = "0.1.0"
