"""Pipeline stages as library calls: one config object in, one function call, a small result out.

    from llm_from_scratch.pipelines import PretrainConfig, pretrain
    result = pretrain(PretrainConfig(model_type="llama-micro", dataset="shakespeare", max_steps=500))

    call                   config              result              module          command
    ---------------------  ------------------  ------------------  --------------  -----------------------
    pretrain               PretrainConfig      PretrainResult      pretraining.py  llmfs train
    finetune_classifier    ClassifierConfig    ClassifierResult    classifier.py   llmfs finetune classify
    finetune_instruct      InstructConfig      InstructResult      instruct.py     llmfs finetune instruct
    run_demo               DemoConfig          DemoResult          demo.py         llmfs demo
    evaluate_tasks         TaskEvalConfig      TaskEvalResult      task_eval.py    llmfs evaluate tasks
    finetune_dpo           DPOConfig           DPOResult           dpo.py          llmfs finetune dpo
    finetune_grpo          GRPOConfig          GRPOResult          grpo.py         llmfs finetune grpo
    finetune_rft           RFTConfig           RFTResult           rft.py          llmfs finetune rft

Each `llmfs` command only turns its flags into the config and makes the call, so Python code
(a script, a notebook, a test) gets exactly the run the command makes: the same resume checks,
checkpoints, printed progress and summary. Bad input raises `PipelineError` with a message that
says what to change (the command line prints it as one line). The shared pieces are in
`common.py` (the error, SIGTERM during training), `finetuning.py` (what both fine-tuning
stages share) and `policy.py` (what DPO and GRPO share).

These modules import torch and the training code inside their functions, so importing them is
instant: the command line imports this package at start-up and `llmfs --help` stays quick.
"""

from llm_from_scratch.pipelines.classifier import ClassifierConfig, ClassifierResult, finetune_classifier
from llm_from_scratch.pipelines.common import PipelineError
from llm_from_scratch.pipelines.demo import DemoConfig, DemoResult, run_demo
from llm_from_scratch.pipelines.dpo import DPOConfig, DPOResult, finetune_dpo
from llm_from_scratch.pipelines.grpo import GRPOConfig, GRPOResult, finetune_grpo
from llm_from_scratch.pipelines.finetuning import FinetuneConfig
from llm_from_scratch.pipelines.instruct import InstructConfig, InstructResult, finetune_instruct
from llm_from_scratch.pipelines.pretraining import PretrainConfig, PretrainResult, pretrain
from llm_from_scratch.pipelines.rft import RFTConfig, RFTResult, finetune_rft
from llm_from_scratch.pipelines.task_eval import TaskEvalConfig, TaskEvalResult, evaluate_tasks

__all__ = [
    "PipelineError", "PretrainConfig", "PretrainResult", "pretrain", "FinetuneConfig",
    "ClassifierConfig", "ClassifierResult", "finetune_classifier", "InstructConfig", "InstructResult",
    "finetune_instruct", "RFTConfig", "RFTResult", "finetune_rft", "DemoConfig", "DemoResult", "run_demo",
    "TaskEvalConfig", "TaskEvalResult",
    "evaluate_tasks", "DPOConfig", "DPOResult", "finetune_dpo", "GRPOConfig", "GRPOResult", "finetune_grpo",
]
