"""Files on disk: writing them safely, and reading and writing our model checkpoints.

* :mod:`.atomic` - write a file whole or not at all (a temporary file, then one rename). Every
  writer in the project goes through it: checkpoints, exports, corpora, token shards, downloads'
  extracted files.
* :mod:`.checkpoints` - our checkpoints: ``.pt`` (a pickled dict) and ``.safetensors`` (weights
  plus the configs, no pickle); taking off the wrappers ``torch.compile`` and DDP put around a
  model and its parameter names.

Which *pretrained* models exist by name is :mod:`llm_from_scratch.weights.catalog`; loading a
ready-to-use model from either is :mod:`llm_from_scratch.loading`.

Nothing is imported here, so ``import llm_from_scratch.io.atomic`` does not pull in PyTorch.
"""
