"""`llmfs serve`: an OpenAI- and Ollama-compatible HTTP server, with a chat page at /.

    llmfs serve --model smollm2-135m-instruct                 # http://127.0.0.1:8000
    llmfs serve --checkpoint checkpoints/gpt-micro/best_model.pt --port 8000
    llmfs serve --model smollm2-135m-instruct --port 11434 --served_model_name llama3   # stands in for Ollama
    LLMFS_API_KEY=secret llmfs serve --model smollm2-135m-instruct --host 0.0.0.0

Then: open the page in a browser, or use any OpenAI client (base_url http://127.0.0.1:8000/v1),
or Ollama-style code (http://127.0.0.1:8000/api/chat). Concurrent requests are decoded together,
up to --max_batch_size at a time; requests arriving meanwhile join the running batch.

Safety: the server listens on 127.0.0.1 (this machine only) unless --host says otherwise; with
--api_key (or the LLMFS_API_KEY environment variable) every API call needs
'Authorization: Bearer KEY'. Request bodies, max_tokens and the number of requests in the house
are limited (--max_body_bytes, --max_tokens, --max_requests).
"""

from __future__ import annotations

import argparse
import os
import sys

from llm_from_scratch.cli.common import command_parser, CommandError, add_flag, add_model_flags, load_from_args, sigterm_as_ctrl_c

API_KEY_ENV = "LLMFS_API_KEY"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_parser(subparsers) -> None:
    p = command_parser(subparsers, "serve", "serve a model over HTTP (OpenAI and Ollama APIs, chat page)", __doc__)
    add_model_flags(p, inference=True)
    add_flag(p, "host", default="127.0.0.1", help="address to listen on (default %(default)s: this machine only; "
                                                  "0.0.0.0 = every network interface)")
    add_flag(p, "port", type=int, default=8000, help="default %(default)s (Ollama's is 11434)")
    add_flag(p, "api_key", default=None, help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV} if set)")
    add_flag(p, "served_model_name", action="append", default=None,
             help="name(s) clients use for the model (repeatable; default: the --model / --checkpoint given)")
    add_flag(p, "max_batch_size", type=int, default=8, help="requests decoded together (default %(default)s; "
                                                            "1 = one at a time)")
    add_flag(p, "max_requests", type=int, default=64, help="requests running or waiting before new ones get "
                                                           "HTTP 429 (default %(default)s)")
    add_flag(p, "max_tokens", type=int, default=512, help="the most tokens one request may generate "
                                                          "(default %(default)s; also the default when a request "
                                                          "does not say)")
    add_flag(p, "max_body_bytes", type=int, default=1_000_000, help="largest request body (default %(default)s)")
    add_flag(p, "no_join", action="store_true", help="new requests wait for the running batch to finish instead "
                                                     "of joining it")
    add_flag(p, "device", default="auto")
    add_flag(p, "threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    add_flag(p, "log_level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(handler=run)


def build_app(args: argparse.Namespace):
    """(FastAPI app, ServedModel) for the parsed arguments (the model is loaded here)."""
    from llm_from_scratch.serving.app import ServedModel, create_app
    from llm_from_scratch.serving.engine import Engine
    from llm_from_scratch.training.trainer import auto_device

    for flag in ("max_batch_size", "max_requests", "max_tokens", "max_body_bytes"):
        if getattr(args, flag) < 1:
            raise CommandError(f"--{flag} must be at least 1")
    if args.threads is not None:
        if args.threads < 1:
            raise CommandError("--threads must be at least 1")
        import torch

        torch.set_num_threads(args.threads)
    loaded = load_from_args(args, auto_device(args.device))
    # The model runs in the main thread (`run`): PyTorch's CPU threads are faster driven from there.
    engine = Engine(loaded.model, loaded.tokenizer, max_batch_size=args.max_batch_size,
                    max_requests=args.max_requests, join_running=not args.no_join, own_thread=False)
    names = args.served_model_name or [args.model or args.checkpoint]
    served = ServedModel.from_loaded(loaded, engine, names, max_tokens_limit=args.max_tokens)
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    return create_app(served, api_key=api_key, max_body_bytes=args.max_body_bytes), served


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # noqa: F401
        import fastapi  # noqa: F401
    except ImportError as exc:
        raise CommandError(f"serving needs FastAPI and uvicorn ({exc.name} is missing): "
                           "pip install 'llm-from-scratch[serve]'") from None
    if not 0 <= args.port <= 65535:
        raise CommandError(f"--port must be 0..65535, got {args.port}")
    if args.host not in LOOPBACK:
        key_note = "" if (args.api_key or os.environ.get(API_KEY_ENV)) else \
            f" There is no API key: set --api_key or ${API_KEY_ENV}."
        print(f"WARNING: listening on {args.host}: other machines on the network can use this server.{key_note}",
              file=sys.stderr)
    app, served = build_app(args)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"Serving {served.id} ({served.parameters / 1e6:.0f}M parameters, context {served.engine.context_length}, "
          f"batches of up to {served.engine.max_batch_size}) on http://{host}:{args.port}\n"
          f"  chat page  http://{host}:{args.port}/\n"
          f"  OpenAI     http://{host}:{args.port}/v1   (model={served.id!r})\n"
          f"  Ollama     http://{host}:{args.port}/api/chat\n"
          f"  API docs   http://{host}:{args.port}/docs", file=sys.stderr)
    with sigterm_as_ctrl_c():  # `kill`, systemd and docker stop a server with SIGTERM: stop cleanly
        serve_until_stopped(app, served.engine, args.host, args.port, args.log_level)
    return 0


def serve_until_stopped(app, engine, host: str, port: int, log_level: str = "info") -> None:
    """uvicorn in a second thread, the engine's model loop in this (main) thread, until Ctrl-C."""
    import threading
    import time

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level))
    thread = threading.Thread(target=server.run, name="llmfs-http", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise CommandError(f"cannot listen on {host}:{port} (see the message above: another server there? "
                               "choose another --port)")
        time.sleep(0.05)
    try:
        engine.run_here(should_stop=lambda: not thread.is_alive())
    except KeyboardInterrupt:
        print("\nstopping", file=sys.stderr)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        engine.shutdown()
