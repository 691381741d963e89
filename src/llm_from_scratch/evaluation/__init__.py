"""Measuring models: one package for every way the project scores a model.

* `perplexity` - how surprised a model is by a text (strided windows; chapter 5's loss as a number
  people compare), `llmfs evaluate perplexity`;
* `accuracy` - a classifier's share of right answers (chapter 6), `llmfs evaluate accuracy`;
* `scoring` - generated answers against reference answers: exact match (chapter 7);
* `judge` - open-ended answers scored 0-100 by another model (Ollama, an OpenAI-compatible
  server, or a local model), `llmfs evaluate judge`.

The training loop's own loss figures (which windows, the final whole-split loss) are
`training/evaluation.py`.
"""
