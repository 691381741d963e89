"""The generation engine behind `llmfs serve`: a request queue and a batching scheduler.

Why batch? Decoding one token reads every weight of the model once. Reading them for 8 requests
at once costs about the same as for one (the arithmetic is small next to the memory traffic), so
a server that decodes its concurrent requests *together* produces several times more tokens per
second than one that serves them one after the other.

This module only *schedules*: which requests wait, which decode together, when one joins or
leaves, what a cancelled one frees. The decoding itself is the generation package's one loop
(`generation/decoding.py`): `BatchedDecoding` runs the model on a left-padded batch with one KV
cache, and the loop's step (`decode_step`, here in its two halves `accept_tokens` and `advance`)
picks each request's token with its own settings and turns it into text (`DecodingRow`,
`IncrementalDetokenizer`: whole characters only, stop strings never sent).

How it runs:

* The web server (asyncio) calls `Engine.submit(prompt_ids, params)`; the request joins a queue
  and the call returns a `RequestHandle` whose events (`TextDelta`, then one `Finished`) arrive as
  they are produced. A full queue raises `EngineFullError` (HTTP 429).
* One worker thread owns the model. Its loop: take waiting requests into the running batch
  (up to `max_batch_size`), pick one token per running request (`accept_tokens`), hand out the
  new text and the finished requests' results, then run the model one step for the others
  (`advance`): a client gets its token before, not after, the next forward pass. Repeat.
* **Joining a running batch** ("continuous batching"): a request that arrives while a batch runs
  does not wait for the batch to finish. Its prompt is prefilled on its own, then the two batches
  are joined (`BatchedDecoding.join`, which merges the KV caches with `KVCache.merge`): every row
  keeps its own tokens, right-aligned at the new common end, so its positions and attention stay
  exactly what they were. The running requests pause for that one prefill.
* Padding must be invisible to the model for this to be exact. At start the engine checks it
  (`padding_is_exact`: the logits of a padded row must equal those of the prompt alone); a model
  that fails the check is only batched with prompts of equal length, and never joined.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Sequence

import torch

from llm_from_scratch.generation import BatchedDecoding, DecodingRow, SamplingParams
from llm_from_scratch.generation.decoding import accept_tokens, advance

log = logging.getLogger("llmfs.serve")

__all__ = ["Engine", "EngineClosedError", "EngineFullError", "Finished", "RequestHandle", "SamplingParams",
           "TextDelta", "padding_is_exact"]


class EngineFullError(RuntimeError):
    """Too many requests are running or waiting: the client should retry later (HTTP 429)."""


class EngineClosedError(RuntimeError):
    """The engine was shut down."""


@dataclass
class TextDelta:
    """New text of a request (never ends inside a character, never contains a stop string)."""

    text: str


@dataclass
class Finished:
    """The last event of a request."""

    reason: str                 # "stop" (stop token or string) or "length" (max_tokens reached)
    text: str                   # the whole generated text
    prompt_tokens: int
    completion_tokens: int
    token_ids: list[int]        # the generated ids (without the stop token)
    queued_s: float             # waiting before its prefill started
    prefill_s: float            # its prefill (prompt processing)
    decode_s: float             # from the first to the last token
    total_s: float


@dataclass(eq=False)  # identity: `in` / `remove` on queues compare objects, not their fields
class _Request:
    """A request as the worker thread sees it (mutable; touched only by the worker once queued)."""

    uid: int
    prompt: list[int]
    row: DecodingRow        # its decoding state: settings, generator, tokens, text
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    cancelled: bool = False
    released: bool = False  # no longer counted against max_requests
    t_submit: float = 0.0
    t_prefill: float = 0.0
    t_first: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)  # for tests/benchmarks: who decoded with whom

    @property
    def params(self) -> SamplingParams:
        return self.row.params

    @property
    def length(self) -> int:
        """Its row's length in a batch: the prompt plus the tokens generated so far."""
        return len(self.prompt) + len(self.row.token_ids)

    def send(self, event: Any) -> None:
        """Hand an event to the request's asyncio side (thread-safe)."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the client's event loop is gone
            self.cancelled = True


class RequestHandle:
    """What `Engine.submit` returns: iterate `events()` (or await `result()`); `cancel()` frees the slot."""

    def __init__(self, engine: "Engine", request: _Request):
        self._engine = engine
        self._request = request
        self.id = request.uid
        self.prompt_tokens = len(request.prompt)
        self.finished: Finished | None = None

    async def events(self) -> AsyncIterator[TextDelta | Finished]:
        """TextDelta events as text is produced, then one Finished. Leaving the loop early (or the
        task being cancelled, e.g. because the HTTP client went away) cancels the request."""
        try:
            while True:
                event = await self._request.queue.get()
                if isinstance(event, BaseException):
                    raise event
                yield event
                if isinstance(event, Finished):
                    self.finished = event
                    return
        finally:
            if self.finished is None:
                self.cancel()

    async def result(self) -> Finished:
        """Wait for the whole generation."""
        async for event in self.events():
            if isinstance(event, Finished):
                return event
        raise EngineClosedError("the request ended without a result")  # pragma: no cover

    def cancel(self) -> None:
        """Stop generating for this request (its slot is freed at the next step). No-op once finished."""
        if self.finished is None:
            self._engine.cancel(self._request)

    @property
    def batch_sizes(self) -> list[int]:
        """The batch size at each decoding step of this request (a record for tests/benchmarks)."""
        return list(self._request.batch_sizes)


def padding_is_exact(model, vocab_size: int, atol: float | None = None) -> bool:
    """Do left-padded rows get the same next-token logits as the prompts alone? (the batching
    check: a model whose attention or positions ignore the cache's padding fails it, by a
    difference of the size of the logits themselves).

    `atol` is relative to the largest logit: 1e-4 for a float model; 2e-2 for a quantized one,
    whose int8/int4 kernels round their inputs to bf16, so a row computed in a batch and alone
    differs by bf16 rounding (measured on SmolLM2: above 1e-3, below 1e-2)."""
    if atol is None:
        from llm_from_scratch.quantize.model import is_quantized

        atol = 2e-2 if is_quantized(model) else 1e-4
    prompts = [[(7 * i + 3) % vocab_size for i in range(6)], [(5 * i + 1) % vocab_size for i in range(2)]]
    try:
        decoding = BatchedDecoding(model, prompts, max_new_tokens=1)
        decoding.step([1 % vocab_size, 2 % vocab_size])
        batched = decoding.logits.float()
        with torch.inference_mode():
            device = next(model.parameters()).device
            alone = [model(torch.tensor([p + [t]], device=device))[0, -1].float()
                     for p, t in zip(prompts, (1 % vocab_size, 2 % vocab_size))]
    except Exception as exc:  # a model without KV-cache support, for one
        log.warning("batching check failed with %s: %s", type(exc).__name__, exc)
        return False
    scale = max(float(a.abs().max()) for a in alone) or 1.0
    return all(torch.allclose(batched[i], alone[i], atol=atol * scale, rtol=0) for i in range(2))


class Engine:
    """A model behind a request queue; one worker thread decodes the running requests together.

    ``max_batch_size``: requests decoded together (1 = one at a time). ``max_requests``: running
    plus waiting requests before `submit` refuses (EngineFullError). ``join_running``: let new
    requests join a running batch (else they wait until it is done).

    ``own_thread=True``: the model runs in a thread the engine starts. ``own_thread=False``: the
    caller runs the loop itself with `run_here()`, best from the main thread: PyTorch's CPU
    threads (OpenMP) are markedly slower when driven from a secondary thread (75 vs 48 ms per
    SmolLM2 step on 2 cores here), so `llmfs serve` runs the model in the main thread and the
    web server in a second one.
    """

    def __init__(self, model, tokenizer, *, max_batch_size: int = 8, max_requests: int = 64,
                 join_running: bool = True, check_padding: bool = True, own_thread: bool = True):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_requests < 1:
            raise ValueError(f"max_requests must be at least 1, got {max_requests}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.max_requests = max_requests
        self.context_length = model.cfg.context_length
        self.device = next(model.parameters()).device
        # A model may have more output rows than its tokenizer has ids (vocabulary padded to a
        # round number): those ids decode to nothing, so they are never sampled.
        self.vocab_size = min(model.cfg.vocab_size, getattr(tokenizer, "vocab_size", model.cfg.vocab_size))
        from llm_from_scratch.tokenizers.chat_template import stop_token_ids

        self.default_stop_ids = tuple(stop_token_ids(tokenizer))
        self.padding_ok = padding_is_exact(model, self.vocab_size) if (check_padding and max_batch_size > 1) \
            else max_batch_size > 1
        if max_batch_size > 1 and not self.padding_ok:
            log.warning("this model does not ignore left padding exactly: only prompts of equal length are "
                        "batched together and requests do not join a running batch")
        self.join_running = join_running and self.padding_ok
        self._uids = itertools.count(1)
        self._cond = threading.Condition()
        self._waiting: deque[_Request] = deque()
        self._running: list[_Request] = []   # touched by the worker only
        self._count = 0                      # running + waiting (under _cond)
        self._paused = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.own_thread = own_thread
        self.stats = {"requests": 0, "finished": 0, "cancelled": 0, "rejected": 0, "steps": 0,
                      "prefills": 0, "joins": 0, "tokens": 0, "peak_batch_size": 0, "errors": 0}

    # ---- life cycle ------------------------------------------------------------------------

    def start(self) -> "Engine":
        """Start the worker thread (if the engine has its own and it is not running yet)."""
        if not self.own_thread:
            return self
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._thread = threading.Thread(target=self._work, name="llmfs-engine", daemon=True)
                self._thread.start()
        return self

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the worker; requests still waiting or running end with EngineClosedError."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:
            leftovers = list(self._waiting) + list(self._running)
            self._waiting.clear()
            self._count = 0
        for request in leftovers:
            request.send(EngineClosedError("the server is shutting down"))

    def pause(self) -> None:
        """Hold new requests in the queue (running ones go on) until `resume`: requests submitted
        meanwhile then start together, in one batch."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    @property
    def load(self) -> dict[str, int]:
        with self._cond:
            return {"running_or_waiting": self._count, "waiting": len(self._waiting)}

    # ---- the asyncio side --------------------------------------------------------------------

    def submit(self, prompt_ids: Sequence[int], params: SamplingParams) -> RequestHandle:
        """Queue a request (call from a running event loop). Raises ValueError for a prompt that
        cannot be generated from and EngineFullError when the queue is full."""
        prompt = [int(t) for t in prompt_ids]
        self.check_prompt(prompt, params.max_tokens)
        loop = asyncio.get_running_loop()
        # the tokenizer's end-of-text/end-of-turn ids stop it unless params.stop_token_ids says otherwise
        row = DecodingRow(params, tokenizer=self.tokenizer, stop_token_ids=self.default_stop_ids,
                          generator=params.make_generator(self.device))
        request = _Request(uid=next(self._uids), prompt=prompt, row=row, loop=loop, queue=asyncio.Queue(),
                           t_submit=time.perf_counter())
        with self._cond:
            if self._stopping:
                raise EngineClosedError("the server is shutting down")
            if self._count >= self.max_requests:
                self.stats["rejected"] += 1
                raise EngineFullError(f"the server is busy ({self._count} requests running or waiting, "
                                      f"the limit is {self.max_requests}): retry in a moment")
            self._count += 1
            self.stats["requests"] += 1
            self._waiting.append(request)
            self._cond.notify_all()
        self.start()
        return RequestHandle(self, request)

    def check_prompt(self, prompt: Sequence[int], max_tokens: int) -> None:
        if not prompt:
            raise ValueError("the prompt is empty: give at least one token of text")
        bad = [t for t in prompt if not 0 <= t < self.model.cfg.vocab_size]
        if bad:
            raise ValueError(f"token ids out of the vocabulary (0..{self.model.cfg.vocab_size - 1}): {bad[:5]}")
        if len(prompt) + max_tokens > self.context_length:
            raise ValueError(f"the prompt has {len(prompt)} tokens and max_tokens is {max_tokens}: together "
                             f"{len(prompt) + max_tokens}, more than the model's context of "
                             f"{self.context_length} tokens. Shorten the prompt or lower max_tokens.")

    def cancel(self, request: _Request) -> None:
        with self._cond:
            if request.cancelled:
                return
            request.cancelled = True
            if request in self._waiting:  # not started yet: free its place in the queue now
                self._waiting.remove(request)
                self._finish_cancelled(request)
            self._cond.notify_all()

    # ---- the worker thread --------------------------------------------------------------------

    def run_here(self, should_stop=lambda: False) -> None:
        """Run the worker loop in the calling thread until `shutdown()` or `should_stop()` is true
        (checked at least every half second). For engines made with ``own_thread=False``."""
        if self.own_thread:
            raise RuntimeError("this engine runs its own thread; create it with own_thread=False to use run_here()")
        with self._cond:
            self._stopping = False
        self._work(should_stop)

    def _work(self, should_stop=lambda: False) -> None:
        batch: BatchedDecoding | None = None
        while True:
            with self._cond:
                if should_stop():
                    self._stopping = True
                while not self._stopping and not self._running and (self._paused or not self._waiting):
                    self._cond.wait(timeout=0.5)
                    if should_stop():
                        self._stopping = True
                if self._stopping:
                    return
                arrivals = self._take_arrivals()
            try:
                if arrivals:
                    batch = self._admit(batch, arrivals)
                if self._running:
                    batch = self._decode_step(batch)
            except Exception as exc:  # a bug or out of memory: fail these requests, keep serving
                log.exception("generation failed")
                self.stats["errors"] += 1
                failed = self._running + [r for r in arrivals if r not in self._running]  # (by identity)
                self._running = []
                batch = None
                for request in failed:
                    request.send(RuntimeError(f"generation failed: {type(exc).__name__}: {exc}"))
                self._release(failed)

    def _release(self, requests: Sequence[_Request]) -> None:
        with self._cond:
            for request in requests:
                if not request.released:
                    request.released = True
                    self._count -= 1

    def _take_arrivals(self) -> list[_Request]:
        """Waiting requests that may start now (called with the lock held), first come first served.

        A request may start if the batch has room, joining is allowed (or nothing runs), and the
        joined cache (longest row + most tokens any row still needs) fits the model's context.
        The first request that does not fit stops the others behind it, so it is not starved.
        """
        if self._paused or (self._running and not self.join_running):
            return []
        while self._waiting and self._waiting[0].cancelled:
            self._finish_cancelled(self._waiting.popleft())
        taken: list[_Request] = []
        rows = list(self._running)
        longest = max((r.length for r in rows), default=0)
        need = max((r.row.remaining for r in rows), default=0)
        while self._waiting and len(rows) < self.max_batch_size:
            request = self._waiting[0]
            if request.cancelled:
                self._finish_cancelled(self._waiting.popleft())
                continue
            if not self.padding_ok and rows and len(request.prompt) != rows[0].length:
                break
            new_longest, new_need = max(longest, len(request.prompt)), max(need, request.params.max_tokens)
            if rows and new_longest + new_need > self.context_length:
                break
            self._waiting.popleft()
            taken.append(request)
            rows.append(request)
            longest, need = new_longest, new_need
        return taken

    def _finish_cancelled(self, request: _Request) -> None:
        self.stats["cancelled"] += 1
        request.released = True
        self._count -= 1

    def _admit(self, batch: BatchedDecoding | None, arrivals: list[_Request]) -> BatchedDecoding:
        """Prefill the arrivals (one left-padded batch) and join them to the running batch."""
        start = time.perf_counter()
        fresh = BatchedDecoding(self.model, [r.prompt for r in arrivals],
                                max_new_tokens=max(r.params.max_tokens for r in arrivals),
                                requests=[r.row for r in arrivals])
        self.stats["prefills"] += 1
        for request in arrivals:
            request.t_prefill = start
        if batch is None or not self._running:
            self._running = list(arrivals)
            return fresh
        # Join: one batch with the running rows first, then the arrivals.
        rows = self._running + arrivals
        batch.join(fresh, extra=max(r.row.remaining for r in rows))
        self._running = rows
        self.stats["joins"] += 1
        return batch

    def _decode_step(self, batch: BatchedDecoding) -> BatchedDecoding | None:
        """Drop cancelled requests, then one step of the generation loop for the others."""
        rows = self._running
        self.stats["peak_batch_size"] = max(self.stats["peak_batch_size"], len(rows))
        for request in rows:
            request.batch_sizes.append(len(rows))
        cancelled = [r for r in rows if r.cancelled]
        if cancelled:
            self.stats["cancelled"] += len(cancelled)
            self._release(cancelled)
            rows = [r for r in rows if not r.cancelled]
            batch.keep([r.row for r in rows])
        if not rows:
            self._running = []
            return None
        picked_at = time.perf_counter()
        # the loop's step in its two halves: the clients get each token before the next forward pass
        results = accept_tokens(batch, vocab_size=self.vocab_size)
        self.stats["tokens"] += len(rows)
        for request, (row, _, text) in zip(rows, results):
            if not request.t_first:
                request.t_first = picked_at
            if text:
                request.send(TextDelta(text))
            if row.finished:
                self._finish(request)
        self._running = [r for r in rows if not r.row.finished]
        if not self._running:
            return None
        advance(batch)
        self.stats["steps"] += 1
        return batch

    def _finish(self, request: _Request) -> None:
        row = request.row
        now = time.perf_counter()
        self.stats["finished"] += 1
        self._release([request])  # before the client hears it is done: its next request finds room
        request.send(Finished(
            reason=row.finish_reason, text=row.text, prompt_tokens=len(request.prompt),
            completion_tokens=len(row.token_ids), token_ids=list(row.token_ids),
            queued_s=request.t_prefill - request.t_submit, prefill_s=request.t_first - request.t_prefill,
            decode_s=now - request.t_first, total_s=now - request.t_submit))
