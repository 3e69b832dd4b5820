"""VQA accuracy: OK-VQA / VQAv2 by the VQA project's `vqaEval.py`, TextVQA by the M4C `TextVQAAccuracyEvaluator`.

Both score a prediction p against the N human answers a_1..a_N (N = 10 in these datasets) as

    acc(p) = (1/N) Σ_i min(1, #{j ≠ i : a_j = p} / 3)          (the mean over the N leave-one-out subsets)

and differ only in how p and the a_j are normalised before comparing (docs/metrics.md, "VQA accuracy"):

* `vqaeval` (GT-Vision-Lab/VQA, vqaEval.py at a013f00, 2021, the current official script): line breaks → spaces,
  strip; then **only if the answers are not all identical**, both p and every a_j go through `normalize_vqa_answer`.
  With unanimous answers nothing else is normalised ("Two." scores 0 against ten "2").
* `vqaeval-2016` (vqaEval.py at 458a8b2, the copy LAVIS ships and InstructBLIP reported with): p is always
  normalised; the answers, only if not identical, get the punctuation step alone.
* `evalai` (facebookresearch/mmf m4c_evaluators.py, `EvalAIAnswerProcessor`; lmms-eval's OK-VQA/TextVQA scorers use
  the same processor): p and every a_j always go through `normalize_evalai_answer`.
"""

from __future__ import annotations

import re
from typing import Sequence

__all__ = ["normalize_vqa_punctuation", "digits_articles", "normalize_vqa_answer", "normalize_evalai_answer",
           "vqa_accuracy", "textvqa_accuracy", "VQA_VERSIONS"]

_VQA_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_VQA_COMMA_NUMBER = re.compile(r"(\d)(,)(\d)")
# The official pattern is "(?!<=\d)(\.)(?!\d)": its first group is a (typo'd) negative lookahead that always holds,
# so in effect every period not followed by a digit is deleted. The official call also passes re.UNICODE (= 32) as
# the *count* argument, so at most 32 periods go; we keep both quirks so scores match the official script.
_VQA_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_VQA_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                     "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_VQA_ARTICLES = frozenset(["a", "an", "the"])
# The official table mapping apostrophe-less (and oddly placed) spellings to the canonical contraction; answers keep
# their apostrophes (the punctuation step leaves "'" alone), so "dont" and "don't" both end as "don't".
_VQA_CONTRACTIONS = dict(pair.split("=") for pair in """
aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've couldnt've=couldn't've
didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've hadn'tve=hadn't've hasnt=hasn't
havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's howd=how'd howll=how'll hows=how's Id've=I'd've
I'dve=I'd've Im=I'm Ive=I've isnt=isn't itd=it'd itd've=it'd've it'dve=it'd've itll=it'll let's=let's maam=ma'am
mightnt=mightn't mightnt've=mightn't've mightn'tve=mightn't've mightve=might've mustnt=mustn't mustve=must've
neednt=needn't notve=not've oclock=o'clock oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at 'ow'sat='ow's'at
shant=shan't shed've=she'd've she'dve=she'd've she's=she's shouldve=should've shouldnt=shouldn't
shouldnt've=shouldn't've shouldn'tve=shouldn't've somebody'd=somebodyd somebodyd've=somebody'd've
somebody'dve=somebody'd've somebodyll=somebody'll somebodys=somebody's someoned=someone'd
someoned've=someone'd've someone'dve=someone'd've someonell=someone'll someones=someone's somethingd=something'd
somethingd've=something'd've something'dve=something'd've somethingll=something'll thats=that's thered=there'd
thered've=there'd've there'dve=there'd've therere=there're theres=there's theyd=they'd theyd've=they'd've
they'dve=they'd've theyll=they'll theyre=they're theyve=they've twas='twas wasnt=wasn't wed've=we'd've
we'dve=we'd've weve=we've werent=weren't whatll=what'll whatre=what're whats=what's whatve=what've whens=when's
whered=where'd wheres=where's whereve=where've whod=who'd whod've=who'd've who'dve=who'd've wholl=who'll whos=who's
whove=who've whyll=why'll whyre=why're whys=why's wont=won't wouldve=would've wouldnt=wouldn't
wouldnt've=wouldn't've wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll y'allll=y'all'll yall'd've=y'all'd've
y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd youd've=you'd've you'dve=you'd've youll=you'll youre=you're
youve=you've
""".split())


def normalize_vqa_punctuation(text: str, comma_number: re.Pattern = _VQA_COMMA_NUMBER) -> str:
    """vqaEval's punctuation step: each mark of the official list is deleted if it touches a space (or the text has
    a digit-comma-digit), else replaced by a space; then periods not before a digit are deleted."""
    out = text
    drop_all = comma_number.search(text) is not None
    for p in _VQA_PUNCT:
        if drop_all or (p + " ") in text or (" " + p) in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _VQA_PERIOD.sub("", out, count=32)


def digits_articles(text: str) -> str:
    """vqaEval's word step: lower-case, number words → digits, articles dropped, contractions canonicalised."""
    words = [_VQA_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(_VQA_CONTRACTIONS.get(w, w) for w in words if w not in _VQA_ARTICLES)


def normalize_vqa_answer(answer: str) -> str:
    """vqaEval's full normalisation (punctuation step, then lower-case, number words zero–ten → digits, articles
    a/an/the dropped, contractions canonicalised): ``"Two dogs."`` → ``"2 dogs"``, ``"1,000"`` → ``"1000"``,
    ``"dont"`` → ``"don't"``. Line breaks become spaces and the ends are stripped first."""
    return digits_articles(normalize_vqa_punctuation(_clean(answer)))


# The EvalAI processor removes every comma first, so its digit-comma-digit test (written with look-arounds) never
# fires; we keep the test anyway so the function reads like the rule it implements.
_EVALAI_COMMA_NUMBER = re.compile(r"(?<=\d)(,)+(?=\d)")


def normalize_evalai_answer(answer: str) -> str:
    """The EvalAI answer processor (M4C / TextVQA): lower-case, delete "," and "?", write "'s" as " 's", strip; line
    breaks → spaces; then vqaEval's punctuation step and `normalize_vqa_answer`'s word step. ``"The man's hat?"`` →
    ``"man 's hat"``."""
    text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    return digits_articles(normalize_vqa_punctuation(_clean(text), _EVALAI_COMMA_NUMBER))


def _clean(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def _leave_one_out(pred: str, answers: Sequence[str]) -> float:
    hits = sum(a == pred for a in answers)
    # leaving out a matching answer leaves hits − 1 matches, leaving out another leaves hits
    return sum(min(1.0, (hits - (a == pred)) / 3) for a in answers) / len(answers)


VQA_VERSIONS = ("vqaeval", "vqaeval-2016", "evalai")


def vqa_accuracy(prediction: str, answers: Sequence[str], version: str = "vqaeval") -> float:
    """VQA accuracy of one prediction against its human answers (module docstring), with the normalisation of
    `version`: ``vqaeval`` (default, the official script), ``vqaeval-2016`` (LAVIS / InstructBLIP) or ``evalai``.

    Any N is scored by the same formula (N = 1 always scores 0, as in the official script, since the only answer is
    left out of its own subset). An empty list raises ValueError (a split without public answers)."""
    if isinstance(answers, str) or len(answers) == 0:
        raise ValueError(f"vqa_accuracy needs a non-empty list of answers, got {answers!r}")
    if version == "vqaeval":
        gts = [_clean(a) for a in answers]
        pred = _clean(prediction)
        if len(set(gts)) > 1:
            gts = [normalize_vqa_answer(a) for a in gts]
            pred = normalize_vqa_answer(pred)
    elif version == "vqaeval-2016":
        gts = list(answers)
        if len(set(gts)) > 1:
            gts = [normalize_vqa_punctuation(a) for a in gts]
        pred = normalize_vqa_answer(prediction)
    elif version == "evalai":
        gts = [normalize_evalai_answer(a) for a in answers]
        pred = normalize_evalai_answer(prediction)
    else:
        raise ValueError(f"vqa_accuracy: version must be one of {VQA_VERSIONS}, got {version!r}")
    return _leave_one_out(pred, gts)


def textvqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """TextVQA accuracy (M4C `TextVQAAccuracyEvaluator`): `vqa_accuracy` with the EvalAI processor."""
    return vqa_accuracy(prediction, answers, "evalai")
