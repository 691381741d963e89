"""Running `llmfs` in-process from a test: exit code, stdout and stderr of one command."""

from __future__ import annotations

import io
import sys

from llm_from_scratch.cli.main import main


def run_cli(capsys, *argv, stdin=None, monkeypatch=None):
    """(exit code, stdout, stderr) of `llmfs *argv`; `stdin` (with `monkeypatch`) feeds its input.
    Arguments may be numbers or paths: they are passed as text, as a shell would."""
    argv = [str(a) for a in argv]
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err
