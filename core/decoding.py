"""Decoding strategies over any causal model that uses a KV cache.

A model qualifies when it has ``max_seq_len``, ``init_cache(batch_size, max_len)`` and
``forward(ids, *, cache) -> logits (B, T, V)`` that reads the new tokens ``ids`` (B, T) at
positions ``cache.length`` onwards (a GPT; or a translation decoder with its memory bound).
Every strategy runs through the same ``next_token_logits`` path: one prefill of the prompt,
then one cached step per new token.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from anyformer.core.cache import DecoderCache

log = logging.getLogger(__name__)

STRATEGIES = ("greedy", "sample", "top-k", "top-p", "beam")


class CausalModel(Protocol):
    max_seq_len: int

    def init_cache(self, batch_size: int, max_len: int | None = None) -> DecoderCache: ...

    def __call__(self, ids: Tensor, *, cache: DecoderCache) -> Tensor: ...


@dataclass
class GenerationConfig:
    """How to pick each new token."""

    strategy: str = "greedy"
    """One of greedy, sample, top-k, top-p, beam."""
    max_new_tokens: int = 100
    """Stop after this many new tokens."""
    temperature: float = 1.0
    """Divides the logits before sampling (<1 sharper, >1 flatter)."""
    top_k: int = 50
    """top-k: sample among the k most likely tokens."""
    top_p: float = 0.9
    """top-p: sample among the smallest set of tokens whose probability reaches p."""
    repetition_penalty: float = 1.0
    """>1 discourages tokens already in the sequence (CTRL's rule)."""
    beams: int = 4
    """beam: number of beams."""
    length_penalty: float = 1.0
    """beam: hypotheses are ranked by log-probability / length**length_penalty."""
    eos_id: int | None = None
    """Stop a sequence when it emits this token."""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"GenerationConfig.strategy={self.strategy!r} is not one of {list(STRATEGIES)}")
        # Written as "not (valid)" so that NaN, which fails every comparison, is rejected too.
        checks = [
            ("temperature", 0 < self.temperature < math.inf, "> 0 and finite"),
            ("top_k", self.top_k >= 1, ">= 1"),
            ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
            ("beams", self.beams >= 1, ">= 1"),
            ("max_new_tokens", self.max_new_tokens >= 0, ">= 0"),
            ("repetition_penalty", 0 < self.repetition_penalty < math.inf, "> 0 and finite"),
            ("length_penalty", math.isfinite(self.length_penalty), "finite"),
        ]
        for name, valid, expected in checks:
            if not valid:
                raise ValueError(f"GenerationConfig.{name} must be {expected}, got {getattr(self, name)!r}")


def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """Divide positive / multiply negative logits of tokens in ``seen`` (B, T) by ``penalty``."""
    if penalty == 1.0:
        return logits
    picked = logits.gather(-1, seen)
    picked = torch.where(picked > 0, picked / penalty, picked * penalty)
    return logits.scatter(-1, seen, picked)


def filter_top_k(logits: Tensor, k: int) -> Tensor:
    """Keep the k largest logits per row, set the rest to -inf."""
    k = min(k, logits.shape[-1])
    threshold = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < threshold, float("-inf"))


def filter_top_p(logits: Tensor, p: float) -> Tensor:
    """Keep the smallest set of most likely tokens whose probability mass reaches p."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    mass_before = sorted_logits.softmax(dim=-1).cumsum(dim=-1) - sorted_logits.softmax(dim=-1)
    sorted_logits = sorted_logits.masked_fill(mass_before >= p, float("-inf"))  # the top token always stays
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


def pick_next(logits: Tensor, sequence: Tensor, cfg: GenerationConfig, generator: torch.Generator | None) -> Tensor:
    """(B, V) logits of the next token -> (B,) chosen ids, by ``cfg.strategy``."""
    logits = apply_repetition_penalty(logits.float(), sequence, cfg.repetition_penalty)
    if cfg.strategy == "greedy":
        return logits.argmax(dim=-1)
    logits = logits / cfg.temperature
    if cfg.strategy == "top-k":
        logits = filter_top_k(logits, cfg.top_k)
    elif cfg.strategy == "top-p":
        logits = filter_top_p(logits, cfg.top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class _Context:
    """Feeds tokens through a cache and re-primes it when the context window is full.

    Absolute positions cannot slide, so when the window is full the cache is rebuilt from
    the last 3/4 of the window (amortizing the re-encoding over a quarter window of steps).
    """

    def __init__(self, model: CausalModel, batch_size: int) -> None:
        self.model, self.batch_size = model, batch_size
        self.cache = model.init_cache(batch_size)

    def logits(self, sequence: Tensor, new: Tensor) -> Tensor:
        """Last-position logits (B, V) after appending ``new`` (B, T) to ``sequence``'s context."""
        if self.cache.length + new.shape[1] > self.cache.max_len:
            keep = max(1, (3 * self.model.max_seq_len) // 4)
            self.cache = self.model.init_cache(self.batch_size)
            new = sequence[:, -keep:]
        return self.model(new, cache=self.cache)[:, -1]


def crop_prompt(prompt: Tensor, max_seq_len: int) -> Tensor:
    """Keep the last ``max_seq_len - 1`` prompt tokens (room for one new token), warning if cut."""
    limit = max_seq_len - 1
    if prompt.shape[1] > limit:
        log.warning(
            "prompt has %d tokens, the context window %d: keeping the last %d", prompt.shape[1], max_seq_len, limit
        )
        return prompt[:, -limit:]
    return prompt


@torch.no_grad()
def stream_tokens(
    model: CausalModel, prompt: Tensor, cfg: GenerationConfig, generator: torch.Generator | None = None
) -> Iterator[Tensor]:
    """Yield the next token ids (B,) one step at a time (greedy and sampling strategies).

    Rows that emitted ``cfg.eos_id`` keep yielding it; iteration stops when every row has.
    """
    if cfg.strategy == "beam":
        raise ValueError("beam search returns whole hypotheses: use beam_search(), not stream_tokens()")
    if prompt.dim() != 2 or prompt.shape[1] == 0:
        raise ValueError(f"prompt must be a (B, T) tensor of token ids with T >= 1, got shape {tuple(prompt.shape)}")
    sequence = crop_prompt(prompt, model.max_seq_len)
    context = _Context(model, sequence.shape[0])
    finished = torch.zeros(sequence.shape[0], dtype=torch.bool, device=sequence.device)
    new = sequence
    for _ in range(cfg.max_new_tokens):
        next_ids = pick_next(context.logits(sequence, new), sequence, cfg, generator)
        if cfg.eos_id is not None:
            next_ids = next_ids.masked_fill(finished, cfg.eos_id)
            finished |= next_ids == cfg.eos_id
        yield next_ids
        new = next_ids[:, None]
        sequence = torch.cat([sequence, new], dim=1)
        if cfg.eos_id is not None and finished.all():  # checked only when it can happen: a device sync
            return


def generate(
    model: CausalModel, prompt: Tensor, cfg: GenerationConfig, generator: torch.Generator | None = None
) -> Tensor:
    """Prompt (B, T) -> (B, T + new) ids; for ``beam`` the best hypothesis of each row."""
    if cfg.strategy == "beam":
        best = [hyps[0].tokens for hyps in beam_search(model, prompt, cfg)]
        width = max(len(t) for t in best)
        fill = cfg.eos_id if cfg.eos_id is not None else 0
        new = torch.tensor([t + [fill] * (width - len(t)) for t in best], dtype=prompt.dtype, device=prompt.device)
        return torch.cat([prompt, new.view(len(best), width)], dim=1)
    steps = list(stream_tokens(model, prompt, cfg, generator))
    return torch.cat([prompt, torch.stack(steps, dim=1)], dim=1) if steps else prompt


@dataclass
class Hypothesis:
    """A finished beam: new tokens (without the prompt) and their ranking score."""

    tokens: list[int]
    log_prob: float
    score: float


@torch.no_grad()
def beam_search(model: CausalModel, prompt: Tensor, cfg: GenerationConfig) -> list[list[Hypothesis]]:
    """Beam search for each prompt row; returns, per row, up to ``cfg.beams`` hypotheses sorted by score.

    Rows are searched together: the cache holds B * beams streams, reordered after each step
    to follow the surviving beams. A hypothesis ends at ``eos_id`` (which it keeps) or at
    ``max_new_tokens``; its score is log_prob / n_tokens ** length_penalty.
    """
    if prompt.dim() != 2 or prompt.shape[1] == 0:
        raise ValueError(f"prompt must be a (B, T) tensor of token ids with T >= 1, got shape {tuple(prompt.shape)}")
    prompt = crop_prompt(prompt, model.max_seq_len)
    n_rows, n_beams, device = prompt.shape[0], cfg.beams, prompt.device
    sequence = prompt.repeat_interleave(n_beams, dim=0)  # (B*beams, T)
    context = _Context(model, n_rows * n_beams)
    # Only the first beam of each row is live at the start, so the first step does not pick duplicates.
    scores = torch.full((n_rows, n_beams), float("-inf"), device=device)
    scores[:, 0] = 0.0
    finished: list[list[Hypothesis]] = [[] for _ in range(n_rows)]
    done = [False] * n_rows
    new, prompt_len = sequence, prompt.shape[1]

    def rank(log_prob: float, n_tokens: int) -> float:
        return log_prob / max(n_tokens, 1) ** cfg.length_penalty

    for step in range(cfg.max_new_tokens):
        logits = apply_repetition_penalty(context.logits(sequence, new).float(), sequence, cfg.repetition_penalty)
        log_probs = logits.log_softmax(dim=-1)  # (B*beams, V)
        vocab = log_probs.shape[-1]
        candidates = (scores.view(-1, 1) + log_probs).view(n_rows, n_beams * vocab)
        cand_scores, cand_idx = candidates.topk(min(2 * n_beams, n_beams * vocab), dim=-1)  # (B, 2*beams)
        # The bookkeeping is plain Python lists (one transfer in, three tensors out per step), not
        # element-wise tensor writes. Rows already done keep their own (dead, -inf) beams in place.
        parents = [list(range(row * n_beams, (row + 1) * n_beams)) for row in range(n_rows)]
        tokens = [[0] * n_beams for _ in range(n_rows)]
        new_scores = [[float("-inf")] * n_beams for _ in range(n_rows)]
        for row, (row_scores, row_idx) in enumerate(zip(cand_scores.tolist(), cand_idx.tolist())):
            kept = 0
            for score, flat in zip(row_scores, row_idx):
                if kept == n_beams or done[row] or score == float("-inf"):
                    break
                beam, token = divmod(flat, vocab)
                parent = row * n_beams + beam
                if cfg.eos_id is not None and token == cfg.eos_id:
                    new_tokens = [*sequence[parent, prompt_len:].tolist(), token]
                    finished[row].append(Hypothesis(new_tokens, score, rank(score, len(new_tokens))))
                    continue
                parents[row][kept], tokens[row][kept], new_scores[row][kept] = parent, token, score
                kept += 1
            if len(finished[row]) >= n_beams:
                best_live = max(new_scores[row])
                worst_kept = min(h.score for h in sorted(finished[row], key=lambda h: -h.score)[:n_beams])
                done[row] = done[row] or rank(best_live, step + 1) <= worst_kept
        if all(done):
            break
        scores = torch.tensor(new_scores, device=device)
        flat_parents = torch.tensor(parents, device=device).view(-1)
        context.cache.reorder(flat_parents)
        new = torch.tensor(tokens, dtype=sequence.dtype, device=device).view(-1, 1)
        sequence = torch.cat([sequence.index_select(0, flat_parents), new], dim=1)
    for row in range(n_rows):
        if done[row]:
            continue
        for beam in range(n_beams):
            log_prob = scores[row, beam].item()
            if log_prob > float("-inf"):
                new_tokens = sequence[row * n_beams + beam, prompt_len:].tolist()
                finished[row].append(Hypothesis(new_tokens, log_prob, rank(log_prob, len(new_tokens))))
    return [sorted(hyps, key=lambda h: -h.score)[:n_beams] for hyps in finished]
