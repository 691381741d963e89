"""`python -m llm_from_scratch ...` is the same as the `llmfs` command (torchrun uses this form)."""

from llm_from_scratch.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
