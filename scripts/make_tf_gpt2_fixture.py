"""Make the tiny TensorFlow GPT-2 checkpoint in ``tests/fixtures/tf_gpt2_tiny/`` with real TensorFlow.

Our reader (`llm_from_scratch.weights.tf_checkpoint`) parses TensorFlow's checkpoint files
without TensorFlow. To test it against the real thing, this script writes a checkpoint the way
OpenAI's GPT-2 code did: TF1-style variables under the scope ``model`` with OpenAI's names and
shapes (including the leading 1 of the ``conv1d`` weights), saved with
``tf.compat.v1.train.Saver``. It also stores the same numbers in ``weights.npz`` so the test can
compare every tensor exactly and build a `transformers` model from them.

It is NOT run by the tests (TensorFlow is not a dependency of this project). Run it in a
separate virtual environment, then commit the folder it writes::

    python3 -m venv /work/tfvenv
    /work/tfvenv/bin/pip install tensorflow-cpu==2.21.0
    /work/tfvenv/bin/python scripts/make_tf_gpt2_fixture.py            # -> tests/fixtures/tf_gpt2_tiny/

The sizes are odd on purpose (67 tokens, 12 positions, width 24, 3 heads, 2 layers): with no
square matrices and more than one head, a forgotten transpose or a wrong head split cannot hide.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np

HPARAMS = {"n_vocab": 67, "n_ctx": 12, "n_embd": 24, "n_head": 3, "n_layer": 2}
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tf_gpt2_tiny"


def openai_gpt2_shapes(hp: dict) -> dict[str, tuple[int, ...]]:
    """Variable names and shapes exactly as OpenAI's ``gpt-2/src/model.py`` creates them."""
    n_embd = hp["n_embd"]
    shapes = {"model/wpe": (hp["n_ctx"], n_embd), "model/wte": (hp["n_vocab"], n_embd)}
    for i in range(hp["n_layer"]):
        block = f"model/h{i}"
        shapes.update({
            f"{block}/ln_1/g": (n_embd,), f"{block}/ln_1/b": (n_embd,),
            f"{block}/attn/c_attn/w": (1, n_embd, 3 * n_embd), f"{block}/attn/c_attn/b": (3 * n_embd,),
            f"{block}/attn/c_proj/w": (1, n_embd, n_embd), f"{block}/attn/c_proj/b": (n_embd,),
            f"{block}/ln_2/g": (n_embd,), f"{block}/ln_2/b": (n_embd,),
            f"{block}/mlp/c_fc/w": (1, n_embd, 4 * n_embd), f"{block}/mlp/c_fc/b": (4 * n_embd,),
            f"{block}/mlp/c_proj/w": (1, 4 * n_embd, n_embd), f"{block}/mlp/c_proj/b": (n_embd,),
        })
    shapes.update({"model/ln_f/g": (n_embd,), "model/ln_f/b": (n_embd,)})
    return shapes


def random_weights(hp: dict, seed: int) -> dict[str, np.ndarray]:
    """Random float32 values; norm gains near 1 and nonzero biases, so every tensor matters."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in openai_gpt2_shapes(hp).items():
        if name.endswith("/g"):
            value = 1.0 + 0.2 * rng.standard_normal(shape)
        elif name.endswith("/b"):
            value = 0.1 * rng.standard_normal(shape)
        else:
            value = 0.3 * rng.standard_normal(shape)
        weights[name] = value.astype(np.float32)
    return weights


def save_with_tensorflow(weights: dict[str, np.ndarray], out: Path, global_step: int) -> None:
    """Create the variables in a TF1 graph and save them with ``tf.compat.v1.train.Saver``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf1 = tf.compat.v1
    tf1.disable_eager_execution()
    graph = tf.Graph()
    with graph.as_default():
        for name, value in weights.items():
            # Names come out as "model/h0/attn/c_attn/w:0"; Saver stores them without ":0".
            tf1.get_variable(name, initializer=tf.constant(value), dtype=tf.float32)
        # A non-model variable of another dtype, as training scripts save one: the reader must
        # list it and read it, and the GPT-2 loader must ignore it.
        tf1.get_variable("global_step", initializer=tf.constant(global_step, dtype=tf.int64), dtype=tf.int64)
        saver = tf1.train.Saver()  # write_version defaults to V2: .index + .data-00000-of-00001
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            # No .meta file (the graph): readers of the weights never need it, and it would
            # more than double the fixture's size.
            saver.save(session, str(out / "model.ckpt"), write_meta_graph=False)
    # Saver records the prefix in `checkpoint`; make it relative like OpenAI's files.
    (out / "checkpoint").write_text(
        'model_checkpoint_path: "model.ckpt"\nall_model_checkpoint_paths: "model.ckpt"\n'
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=2019)
    args = parser.parse_args()

    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    weights = random_weights(HPARAMS, args.seed)
    global_step = 4242
    save_with_tensorflow(weights, out, global_step)
    (out / "hparams.json").write_text(json.dumps(HPARAMS, indent=2) + "\n")
    np.savez(out / "weights.npz", global_step=np.array(global_step, dtype=np.int64), **weights)
    total = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {out} ({total / 1024:.0f} KiB):")
    for file in sorted(out.iterdir()):
        print(f"  {file.name:35s} {file.stat().st_size:8d} bytes")


if __name__ == "__main__":
    main()
