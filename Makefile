# Two commands on a fresh machine:
#   make demo   -> set up .venv and run the main job (llmfs train, no flags), then sample from it
#   make test   -> set up .venv (with test extras) and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0

.PHONY: setup demo test test-bf16 bench clean

setup: $(VENV)/.installed

# PyTorch first: on a machine without an NVIDIA GPU a plain `pip install torch` would pull a
# multi-GB CUDA build, so we ask PyTorch's CPU index as well (its "+cpu" build wins when both
# have the version). With a GPU, the normal PyPI (CUDA) build is installed. A torch that is
# already in the venv is kept; set TORCH_SPEC to choose your own, e.g. TORCH_SPEC="torch==2.5.1".
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if $(BIN)/python -c "import torch" 2>/dev/null; then \
	  echo "torch already installed: $$($(BIN)/python -c 'import torch; print(torch.__version__)')"; \
	elif [ -n "$(TORCH_SPEC)" ]; then \
	  $(BIN)/pip install "$(TORCH_SPEC)"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
	  $(BIN)/pip install "torch==$(TORCH_VERSION)"; \
	else \
	  $(BIN)/pip install "torch==$(TORCH_VERSION)" --extra-index-url https://download.pytorch.org/whl/cpu --retries 1; \
	fi
	$(BIN)/pip install -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/llmfs train
	$(BIN)/llmfs generate --checkpoint checkpoints/gpt-micro/best_model.pt --prompt "KING" --max_new_tokens 300 --seed 1

test: setup
	$(BIN)/python -m pytest -q

# The training and precision tests again with the AMX/bf16 path forced on (LLMFS_CPU_BF16=1), so a
# test that only holds in fp32 fails on every machine, not just on CPUs where "auto" picks bf16.
BF16_TESTS := tests/test_precision.py tests/test_training.py tests/test_evaluation.py tests/test_train_cli.py \
	tests/test_linear_cross_entropy.py tests/test_finetune.py tests/test_finetune_cli.py tests/test_seed_api.py \
	tests/test_cli.py tests/test_pipelines.py
test-bf16: setup
	LLMFS_CPU_BF16=1 $(BIN)/python -m pytest -q $(BF16_TESTS)

bench: setup
	$(BIN)/python benchmarks/bench_generation.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
