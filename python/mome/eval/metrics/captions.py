"""CIDEr-D as the COCO caption evaluation computes it (`pycocoevalcap`: `PTBTokenizer`, then `Cider`).

Tokenisation is where implementations drift apart, so it is explicit: `tokenize_captions` runs the COCO tokenizer
itself (Stanford CoreNLP 3.4.1's PTBTokenizer, in Java, with COCO's flags and punctuation filter) when Java and the
jar are available, which is what every published CIDEr number used. Without Java it falls back to `ptb_tokenize`,
our Python port of the tokenizer's rules, and warns once that scores may differ slightly (docs/metrics.md gives the
measured difference).
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Sequence

__all__ = ["ptb_tokenize", "java_ptb_tokenize", "java_tokenizer_available", "tokenize_captions", "tokenizer_name",
           "cider", "cider_scores"]

# ---------------------------------------------------------------------------------------------------------------------
# COCO PTB tokenisation
#
# The COCO caption evaluation runs Stanford CoreNLP 3.4.1's PTBTokenizer (`-preserveLines -lowerCase`) over every
# caption and then drops the tokens in a fixed punctuation list. We re-implement the tokenizer's rules that matter for
# captions, used when Java is missing; tests/eval/test_cider.py checks the output token-for-token against the
# Java tokenizer on a batch of awkward captions (tests/eval/captions_corpus.py). Known differences: a clitic inside a
# hyphenated word ("cat's-eye": PTB splits it); PTB knows more abbreviations than `_ABBREVIATIONS` (those keep their
# final period there) and more Unicode symbols than `_TYPOGRAPHIC` maps; tools/cider_tokenizer_diff.py measures what
# such differences do to CIDEr-D.

# Dropped after tokenising. The COCO list names the bracket escapes in upper case ("-LRB-"), but `-lowerCase` has
# already lower-cased the tokens, so "-lrb-" etc. survive: we reproduce that by filtering lower-cased tokens.
_COCO_PUNCTUATION = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
                               ".", "?", "!", ",", ":", "-", "--", "...", ";"])
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
# PTB normalises these currency signs to the ASCII the Penn Treebank used.
_CURRENCY = {"€": "$", "£": "#"}
# PTB reads typographic quotes, dashes and the ellipsis as their ASCII forms ("‘" always opens a quote, "’" may be an
# apostrophe).
_TYPOGRAPHIC = str.maketrans({"’": "'", "‘": "`", "“": '"', "”": '"', "—": " -- ", "–": " -- ", "…": " ... ",
                              "½": "1/2", "¼": "1/4", "¾": "3/4", "⅓": "1/3", "⅔": "2/3",
                              "¹": " ¹ ", "²": " ² ", "³": " ³ "})   # fractions written out, superscripts split
# Characters outside the Basic Multilingual Plane (emoji): PTB cannot tokenise them and drops them.
_ASTRAL = re.compile("[\U00010000-\U0010FFFF]")
# Words that keep their final period (PTB treats them as abbreviations, not sentence ends).
_ABBREVIATIONS = frozenset("""
    mr mrs ms dr st jr sr prof vs etc mt inc co ltd corp bros gen gov sen rep rev capt col lt sgt ft ave blvd
    jan feb mar apr jun jul aug sep sept oct nov dec
""".split())
# Whole words PTB splits in two (case-insensitive).
_SPLIT_WORDS = {"cannot": ("can", "not"), "gonna": ("gon", "na"), "gotta": ("got", "ta"), "lemme": ("lem", "me"),
                "gimme": ("gim", "me"), "wanna": ("wan", "na"), "y'all": ("y'", "all")}
_CLITIC = re.compile(r"^(.+?)(n't|'s|'m|'d|'re|'ve|'ll)$", re.IGNORECASE)
_ACRONYM = re.compile(r"^(?:[^\W\d_]\.)*[^\W\d_]$")

# One alternation, tried left to right at each position of a whitespace-free chunk (first match wins).
# A word piece: a number with inner , . : ("1,000.50", "5:30"), an upper-case "AT&T", or word characters joined by
# / ' . ("a/b", "o'clock", "u.s"); pieces joined by single hyphens make one token ("3.5-inch", "black-and-white").
_SEG = (r"(?:\d+(?:[,.:]\d+)+|(?-i:[A-Z]+&[A-Z]+)|[^\W\d_](?:\+\+|#)(?!\w)"
        r"|\w+(?:[/.!?]\w+|(?<=[^\W\d_])'(?=[^\W\d_])\w+)*)")
_PTB_TOKEN = re.compile(
    r"(?P<url>(?:https?://|www\.)\S+)"
    r"|(?P<email>[\w.+-]+@\w[\w-]*(?:\.[\w-]+)+)"
    r"|(?P<tag><[^<>\s]+>)"
    r"|(?P<clitic>'n'|'(?:s|m|d|re|ve|ll|em)(?!\w)|(?<!\d)'\d+s?(?!\w)|(?<!\d)'\d+|'t(?=(?:is|was)(?!\w)))"
    r"|(?P<quote>''|``|[\"`'])"
    r"|(?P<bracket>[()\[\]{}])"
    r"|(?P<currency>(?:us|hk|a|c)\$)"
    r"|(?P<hashtag>#[^\W\d_]\w*)"
    r"|(?P<word>(?:[-+](?:\d+(?:[,.:]\d+)*|\.\d+)|\.\d+|" + _SEG + r")(?:-" + _SEG + r")*)"
    r"|(?P<marks>[?!]+)"
    r"|(?P<dots>\.{2,})"
    r"|(?P<dashes>-{2,})"
    r"|(?P<other>.)",
    re.IGNORECASE | re.DOTALL,
)


def _split_word(word: str) -> list[str]:
    """PTB's word-internal splits: special words, the "'n'" of "rock'n'roll", and clitics peeled from the end."""
    low = word.lower()
    if low in _SPLIT_WORDS:
        return list(_SPLIT_WORDS[low])
    if "'n'" in low and low != "'n'":
        parts = [p for p in re.split(r"('n')", word, flags=re.IGNORECASE) if p]
        return [t for p in parts for t in (_split_word(p) if p.lower() != "'n'" else [p])]
    tail = []
    while (m := _CLITIC.match(word)) is not None:
        word = m.group(1)
        tail.insert(0, m.group(2))
    return [word] + tail


def _ptb_tokens(line: str) -> list[str]:
    tokens: list[str] = []
    chunks = _ASTRAL.sub("", line.translate(_TYPOGRAPHIC)).split()
    for i, chunk in enumerate(chunks):
        pos = 0
        while pos < len(chunk):
            m = _PTB_TOKEN.match(chunk, pos)
            kind, text = m.lastgroup, m.group()
            pos += len(text)
            if kind == "word":
                # A final period belongs to the word only for abbreviations, acronyms and initials ("u.s.", "a."),
                # and "No." before a number ("No. 1").
                if chunk.startswith(".", pos) and not chunk.startswith("..", pos) and (
                        text.lower() in _ABBREVIATIONS or _ACRONYM.match(text) or (
                            text.lower() == "no" and pos + 1 == len(chunk) and i + 1 < len(chunks)
                            and chunks[i + 1][:1].isdigit())):
                    text += "."
                    pos += 1
                tokens.extend(_split_word(text))
            elif kind == "bracket":
                tokens.append(_BRACKETS[text])
            elif kind == "quote":
                tokens.append("``")  # PTB writes every quote as `` or '', both dropped
            elif kind == "dots":
                tokens.append("...")
            elif kind == "dashes":
                tokens.append("--")
            elif kind == "other":
                tokens.append(_CURRENCY.get(text, text))
            else:
                tokens.append(text)
    return tokens


def ptb_tokenize(text: str) -> str:
    """A caption as the COCO caption evaluation sees it: PTB-tokenised, lower-cased, punctuation tokens removed,
    tokens joined by single spaces (``"A man's hat."`` → ``"a man 's hat"``)."""
    return " ".join(t for t in (t.lower() for t in _ptb_tokens(text.replace("\n", " ")))
                    if t not in _COCO_PUNCTUATION)




# ---------------------------------------------------------------------------------------------------------------------
# The Java tokenizer, run as COCO runs it

_PTB_JAR = "stanford-corenlp-3.4.1.jar"   # shipped inside pycocoevalcap (its tokenizer/ folder)
_PTB_CLASS = "edu.stanford.nlp.process.PTBTokenizer"
# The tokenizer keeps one output line per input line (-preserveLines), so a caption must not contain a line break
# of its own: COCO replaces "\n" only, and a "\r" then shifts every later caption by a line; we replace them all.
_LINE_BREAKS = re.compile(r"[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")


def _ptb_jar() -> Path | None:
    """The CoreNLP jar: $MOME_PTB_JAR, else the one inside the installed pycocoevalcap (found without importing)."""
    if os.environ.get("MOME_PTB_JAR"):
        return Path(os.environ["MOME_PTB_JAR"])
    spec = importlib.util.find_spec("pycocoevalcap")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        jar = Path(folder) / "tokenizer" / _PTB_JAR
        if jar.is_file():
            return jar
    return None


def java_tokenizer_available() -> bool:
    """True when `java` is on PATH and the CoreNLP 3.4.1 jar is found (pycocoevalcap installed, or $MOME_PTB_JAR)."""
    return shutil.which("java") is not None and _ptb_jar() is not None


def java_ptb_tokenize(texts: Sequence[str]) -> list[str]:
    """Captions through the Java PTBTokenizer exactly as `pycocoevalcap.tokenizer.PTBTokenizer` runs it (one JVM for
    the whole list; ``-preserveLines -lowerCase``; tokens split on single spaces; COCO's punctuation tokens dropped).
    Raises RuntimeError when Java or the jar is missing or the tokenizer fails."""
    jar = _ptb_jar()
    if shutil.which("java") is None or jar is None:
        raise RuntimeError("the Java PTB tokenizer needs `java` on PATH and pycocoevalcap's stanford-corenlp-3.4.1.jar "
                           "(pip install pycocoevalcap, or set MOME_PTB_JAR)")
    if not texts:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "captions.txt"
        src.write_bytes("\n".join(_LINE_BREAKS.sub(" ", t) for t in texts).encode("utf-8"))
        run = subprocess.run(["java", "-cp", str(jar), _PTB_CLASS, "-preserveLines", "-lowerCase", str(src)],
                             capture_output=True)
    if run.returncode != 0:
        raise RuntimeError(f"the Java PTB tokenizer failed ({run.returncode}): {run.stderr.decode(errors='replace')}")
    lines = run.stdout.decode("utf-8").split("\n")
    if len(lines) < len(texts):
        raise RuntimeError(f"the Java PTB tokenizer returned {len(lines)} lines for {len(texts)} captions")
    return [" ".join(w for w in line.rstrip().split(" ") if w not in _COCO_PUNCTUATION) for line in lines[:len(texts)]]


_warned_python = False


def tokenizer_name(tokenizer: str = "auto") -> str:
    """Which tokenizer `tokenize_captions(…, tokenizer)` uses: "java" or "python"."""
    if tokenizer not in ("auto", "java", "python"):
        raise ValueError(f"tokenizer must be auto, java or python, got {tokenizer!r}")
    if tokenizer == "auto":
        return "java" if java_tokenizer_available() else "python"
    return tokenizer


def tokenize_captions(texts: Sequence[str], tokenizer: str = "auto") -> list[str]:
    """COCO-tokenised captions. ``auto``: the Java tokenizer when available, else the Python port with a one-line
    warning; ``java`` / ``python`` force one."""
    global _warned_python
    name = tokenizer_name(tokenizer)
    if name == "java":
        return java_ptb_tokenize(texts)
    if tokenizer == "auto" and not _warned_python:
        _warned_python = True
        warnings.warn("CIDEr: Java PTB tokenizer unavailable (needs java + pycocoevalcap), using the Python port; "
                      "scores may differ slightly from published ones", stacklevel=3)
    return [ptb_tokenize(t) for t in texts]


# ---------------------------------------------------------------------------------------------------------------------
# CIDEr-D

def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    """Counts of all k-grams, k = 1..n."""
    return Counter(tuple(tokens[i:i + k]) for k in range(1, n + 1) for i in range(len(tokens) - k + 1))


def cider_scores(predictions: Sequence[str], references: Sequence[Sequence[str]], *, n: int = 4,
                 sigma: float = 6.0, tokenize: bool | str = True) -> list[float]:
    """Per-sample CIDEr-D (Vedantam et al., CVPR 2015, §3 and the "CIDEr-D" variant), as the COCO caption evaluation
    (`pycocoevalcap.cider`) computes it.

    For sample i with candidate c and references S_i (all PTB-tokenised, `tokenize_captions`), and k-gram ω:
    g_ω(s) = h_ω(s) · log(N / max(1, df_ω)), with h the raw count of ω in s, N the number of samples and df_ω the number
    of samples whose references contain ω (document frequencies come from the evaluated set's references: the score
    of a caption depends on the whole set). Then

        CIDEr-D_k(c, S) = (10 / |S|) Σ_{s∈S} e^{−(ℓ(c) − ℓ(s))² / (2σ²)} · Σ_ω min(g_ω(c), g_ω(s)) g_ω(s)
                                                                           / (‖g^k(c)‖ ‖g^k(s)‖)
        CIDEr-D(c, S) = (1/n) Σ_{k=1..n} CIDEr-D_k(c, S)

    with n = 4, σ = 6. As in the COCO code, ℓ(·) counts bigrams (= words − 1, and 0 for an empty sentence) and a
    k-term whose norm is zero contributes only its (zero) numerator.
    `tokenize`: True or ``"auto"`` (the Java tokenizer when available, else the Python port with a warning),
    ``"java"``, ``"python"``, or False (the texts are already tokenised: split on whitespace).
    """
    if len(predictions) != len(references):
        raise ValueError(f"cider: {len(predictions)} predictions but {len(references)} reference lists")
    for i, refs in enumerate(references):
        if isinstance(refs, str) or len(refs) == 0:
            raise ValueError(f"cider: sample {i} needs a non-empty list of reference captions, got {refs!r}")
    flat = list(predictions) + [r for refs in references for r in refs]
    if tokenize is not False:
        flat = tokenize_captions(flat, "auto" if tokenize is True else tokenize)   # one Java run for the whole set
    it = iter(flat[len(predictions):])
    cand_counts = [_ngrams(p.split(), n) for p in flat[:len(predictions)]]
    ref_counts = [[_ngrams(next(it).split(), n) for _ in refs] for refs in references]

    df: Counter = Counter()
    for refs in ref_counts:
        df.update(set().union(*refs))
    log_n = math.log(len(predictions)) if predictions else 0.0

    def vectorise(counts: Counter):
        vec = [dict() for _ in range(n)]
        norm2 = [0.0] * n
        for gram, tf in counts.items():
            k = len(gram) - 1
            w = tf * (log_n - math.log(max(1.0, df[gram])))
            vec[k][gram] = w
            norm2[k] += w * w
        bigrams = sum(tf for gram, tf in counts.items() if len(gram) == 2)
        return vec, [math.sqrt(x) for x in norm2], bigrams

    scores = []
    for cand, refs in zip(cand_counts, ref_counts):
        vc, nc, lc = vectorise(cand)
        total = [0.0] * n
        for ref in refs:
            vr, nr, lr = vectorise(ref)
            penalty = math.exp(-((lc - lr) ** 2) / (2 * sigma ** 2))
            for k in range(n):
                dot = sum(min(w, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, w in vc[k].items())
                if nc[k] != 0 and nr[k] != 0:
                    dot /= nc[k] * nr[k]
                total[k] += dot * penalty
        scores.append(10.0 * (sum(total) / n) / len(refs))
    return scores


def cider(predictions: Sequence[str], references: Sequence[Sequence[str]], **kw) -> float:
    """Corpus CIDEr-D: the mean of `cider_scores` over the set (COCO reports this, e.g. 1.308; tables print ×100)."""
    s = cider_scores(predictions, references, **kw)
    return sum(s) / len(s) if s else 0.0

