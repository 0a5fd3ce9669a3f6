"""Adaptive GCG (Zou et al. 2023, arXiv 2307.15043), white-box against the model under test.

privinf's own implementation (nanogcg pins an old transformers). One step:

1. gradient of the target loss with respect to the one-hot encoding of the suffix tokens;
2. for each suffix position, the ``topk`` tokens with the most negative gradient (special and
   non-ASCII tokens excluded);
3. ``search_width`` candidates, each the current suffix with one position replaced by one of its
   top-k tokens (position and token drawn by a seeded generator); candidates whose text does not
   re-tokenize to the same ids in the chat prompt are dropped, so what is optimised is what is
   later generated from;
4. the loss of every candidate in batches (the chat prefix before the suffix is computed once and
   its key/value cache reused), keeping the best suffix found so far (the loss never increases).

The loss is the mean cross-entropy of the target string (default ``Sure, here is how to
<prompt>``) after ``<chat prefix><prompt> <suffix><chat suffix>``. Early stop: when every target
token is the model's greedy choice. Run it inside ``perturbation(model, config)`` to attack the
model *under* a card's approximation.
"""

from __future__ import annotations

import copy
import inspect
import time
from dataclasses import asdict, dataclass, field

import torch

from privinf.attacks import UsageError
from privinf.errors import RuntimeFault

MARK = "<<privinf-gcg-suffix>>"
TARGET = "Sure, here is how to {prompt}"


@dataclass(frozen=True)
class GCGConfig:
    steps: int = 25
    search_width: int = 32
    topk: int = 64
    suffix_len: int = 20
    batch_size: int = 32  # candidates per forward
    seed: int = 0
    early_stop: bool = True
    target: str = TARGET

    def __post_init__(self):
        for name in ("steps", "search_width", "topk", "suffix_len", "batch_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"--gcg-{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GCGResult:
    suffix: str
    suffix_ids: list[int]
    loss: float
    losses: list[float] = field(default_factory=list)  # best loss after each step, [0] = initial
    steps: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # process CPU time (wall time on a shared machine includes waiting)
    early_stopped: bool = False
    candidates_kept: float = 1.0  # mean fraction of candidates surviving the re-tokenization check

    def to_dict(self) -> dict:
        return asdict(self)


def target_text(prompt: str, template: str = TARGET) -> str:
    p = prompt.strip().rstrip(".")
    return template.format(prompt=p[:1].lower() + p[1:])


def allowed_tokens(tokenizer, vocab_size: int) -> torch.Tensor:
    """(V,) bool: tokens a suffix may use (not special, printable ASCII, not blank)."""
    ok = torch.zeros(vocab_size, dtype=torch.bool)
    special = set(tokenizer.all_special_ids)
    n = min(vocab_size, len(tokenizer))
    for i, text in enumerate(tokenizer.batch_decode([[i] for i in range(n)])):
        ok[i] = i not in special and text.isascii() and text.isprintable() and bool(text.strip())
    return ok


def _cache_arg(model) -> str | None:
    """The forward keyword for a key/value cache: ``cache`` (transformers >= 5.2x), else ``past_key_values``."""
    params = inspect.signature(model.forward).parameters
    return next((n for n in ("cache", "past_key_values") if n in params), None)


class Problem:
    """The token layout of one prompt: chat prefix | suffix | chat suffix | target."""

    def __init__(self, model, tokenizer, prompt: str, target: str):
        from privinf.safety.generate import chat_texts

        self.model, self.tok, self.prompt = model, tokenizer, prompt
        text = chat_texts(tokenizer, [f"{prompt} {MARK}"])[0]
        self.before_text, self.after_text = text.split(MARK)
        enc = lambda s: tokenizer(s, add_special_tokens=False, return_tensors="pt")["input_ids"][0]  # noqa: E731
        self.before, self.after, self.target = enc(self.before_text), enc(self.after_text), enc(target)
        self.embed = model.get_input_embeddings()

    def text_with(self, ids: torch.Tensor) -> str:
        return self.tok.decode(ids.tolist())

    def prompt_with(self, ids: torch.Tensor) -> str:
        """The user message that carries suffix ``ids``."""
        return f"{self.prompt} {self.text_with(ids)}"

    def roundtrips(self, cands: torch.Tensor) -> torch.Tensor:
        """(B,) bool: the chat text of each candidate tokenizes back to exactly its ids."""
        texts = [self.before_text + self.text_with(c) + self.after_text for c in cands]
        enc = self.tok(texts, add_special_tokens=False)["input_ids"]
        ref = [torch.cat([self.before, c, self.after]).tolist() for c in cands]
        return torch.tensor([e == r for e, r in zip(enc, ref)])

    def _loss_from_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """logits (B, T+1, V) over the last T+1 positions -> loss (B,), exact match (B,)."""
        pred = logits[:, :-1].float()  # (B, T, V): position t predicts target token t
        tgt = self.target.to(pred.device).expand(pred.shape[0], -1)  # (B, T)
        loss = torch.nn.functional.cross_entropy(pred.transpose(1, 2), tgt, reduction="none").mean(1)
        return loss, (pred.argmax(-1) == tgt).all(1)

    def gradient(self, suffix: torch.Tensor) -> torch.Tensor:
        """d loss / d one-hot(suffix): (L, V)."""
        w = self.embed.weight  # (V, D)
        one_hot = torch.zeros(len(suffix), w.shape[0], dtype=w.dtype, device=w.device)
        one_hot[torch.arange(len(suffix)), suffix] = 1.0
        one_hot.requires_grad_(True)
        dev = w.device
        emb = torch.cat([self.embed(self.before.to(dev)), one_hot @ w, self.embed(self.after.to(dev)),
                         self.embed(self.target.to(dev))])[None]  # (1, S, D)
        logits = self.model(inputs_embeds=emb, logits_to_keep=len(self.target) + 1).logits
        loss, _ = self._loss_from_logits(logits)
        (grad,) = torch.autograd.grad(loss.sum(), one_hot)
        return grad

    @torch.no_grad()
    def prefix_cache(self):
        """The key/value cache of the chat prefix (None when the model's forward takes no cache)."""
        name = _cache_arg(self.model)
        if name is None:
            return None
        out = self.model(input_ids=self.before[None].to(self.model.device), use_cache=True)
        return out["cache"] if "cache" in out else out["past_key_values"]

    @torch.no_grad()
    def losses(self, cands: torch.Tensor, batch_size: int, cache=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and exact-match flag of each candidate suffix (B, L), in batches."""
        dev = self.model.device
        tail = torch.cat([self.after, self.target])
        out_l, out_m = [], []
        for i in range(0, len(cands), batch_size):
            c = cands[i:i + batch_size]
            ids = torch.cat([c, tail.expand(len(c), -1)], 1).to(dev)  # (b, L + A + T)
            if cache is None:
                ids = torch.cat([self.before.expand(len(c), -1).to(dev), ids], 1)
                logits = self.model(input_ids=ids, logits_to_keep=len(self.target) + 1).logits
            else:
                kv = copy.deepcopy(cache)
                kv.batch_repeat_interleave(len(c))
                logits = self.model(input_ids=ids, use_cache=True, logits_to_keep=len(self.target) + 1,
                                    **{_cache_arg(self.model): kv}).logits
            loss, match = self._loss_from_logits(logits)
            out_l.append(loss.cpu())
            out_m.append(match.cpu())
        return torch.cat(out_l), torch.cat(out_m)


def initial_suffix(problem: Problem, allowed: torch.Tensor, length: int) -> torch.Tensor:
    """``length`` copies of ``!`` (GCG's start), or of the first allowed token that round-trips."""
    tok = problem.tok
    first = [tok(s, add_special_tokens=False)["input_ids"] for s in ("!", " !")]
    options = [ids[-1] for ids in first if ids] + allowed.nonzero()[:64, 0].tolist()
    for t in options:
        if t < len(allowed) and allowed[t]:
            cand = torch.full((length,), t, dtype=torch.long)
            if problem.roundtrips(cand[None])[0]:
                return cand
    raise RuntimeFault("GCG: found no token that can start the suffix (the tokenizer round-trips none)")


def gcg(model, tokenizer, prompt: str, config: GCGConfig = GCGConfig(), allowed: torch.Tensor | None = None,
        use_cache: bool = True) -> GCGResult:
    """Optimise a suffix for ``prompt`` (run inside ``perturbation(...)`` to attack an approximation)."""
    t0, c0 = time.perf_counter(), time.process_time()
    problem = Problem(model, tokenizer, prompt, target_text(prompt, config.target))
    vocab = problem.embed.weight.shape[0]
    allowed = allowed_tokens(tokenizer, vocab) if allowed is None else allowed
    gen = torch.Generator().manual_seed(config.seed)
    suffix = initial_suffix(problem, allowed, config.suffix_len)
    cache = problem.prefix_cache() if use_cache else None
    loss, match = problem.losses(suffix[None], 1, cache)
    best, best_loss, done = suffix, float(loss[0]), bool(match[0])
    losses, kept, steps = [best_loss], [], 0
    while steps < config.steps and not (done and config.early_stop):
        steps += 1
        grad = problem.gradient(best)  # (L, V)
        grad[:, ~allowed.to(grad.device)] = float("inf")
        top = (-grad).topk(min(config.topk, int(allowed.sum())), dim=1).indices.cpu()  # (L, k)
        pos = torch.randint(len(best), (config.search_width,), generator=gen)
        pick = torch.randint(top.shape[1], (config.search_width,), generator=gen)
        cands = best.repeat(config.search_width, 1)
        cands[torch.arange(config.search_width), pos] = top[pos, pick]
        cands = torch.unique(cands, dim=0)
        cands = cands[(cands != best).any(1)]
        ok = problem.roundtrips(cands) if len(cands) else torch.zeros(0, dtype=torch.bool)
        kept.append(float(ok.float().mean()) if len(ok) else 0.0)
        cands = cands[ok]
        if len(cands):
            lc, mc = problem.losses(cands, config.batch_size, cache)
            i = int(lc.argmin())
            if float(lc[i]) < best_loss:
                best, best_loss, done = cands[i], float(lc[i]), bool(mc[i])
        losses.append(best_loss)
    return GCGResult(problem.text_with(best), best.tolist(), best_loss, losses, steps, time.perf_counter() - t0,
                     time.process_time() - c0, done, sum(kept) / len(kept) if kept else 1.0)
