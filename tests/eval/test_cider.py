"""CIDEr-D and the COCO PTB tokenisation against the COCO caption evaluation (`pycocoevalcap`, the oracle)."""

import math
import random
import shutil

import pytest

from mome.eval.metrics import cider, cider_scores, ptb_tokenize
from tests.eval.captions_corpus import CAPTIONS

pycoco_cider = pytest.importorskip("pycocoevalcap.cider.cider", reason="pycocoevalcap is the CIDEr oracle")


@pytest.fixture(scope="module")
def java_tokenized():
    """One Java PTBTokenizer run over all CAPTIONS (its start-up costs about a second)."""
    if shutil.which("java") is None:
        pytest.skip("the COCO PTB tokenizer needs Java")
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    out = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(CAPTIONS)})
    return [out[i][0] for i in range(len(CAPTIONS))]


def test_ptb_tokenize_matches_java(java_tokenized):
    diffs = [(c, j, ptb_tokenize(c)) for c, j in zip(CAPTIONS, java_tokenized) if ptb_tokenize(c) != j]
    assert not diffs, "\n".join(f"{c!r}: java {j!r}, ours {o!r}" for c, j, o in diffs)


def test_ptb_tokenize_golden():
    # Read off the Java tokenizer's output (test_ptb_tokenize_matches_java checks the same with Java present).
    assert ptb_tokenize("A man's hat.") == "a man 's hat"
    assert ptb_tokenize("Don't stop (now)!") == "do n't stop -lrb- now -rrb-"   # COCO keeps the bracket escapes
    assert ptb_tokenize("") == ""


def _oracle(preds, refs):
    """pycocoevalcap's CIDEr-D on already-tokenised text: (corpus score, per-sample scores)."""
    gts = {i: list(r) for i, r in enumerate(refs)}
    res = {i: [p] for i, p in enumerate(preds)}
    corpus, per = pycoco_cider.Cider().compute_score(gts, res)
    return corpus, list(per)


def _close(a, b):
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def _random_caption(rng, vocab, lo, hi):
    return " ".join(rng.choice(vocab) for _ in range(rng.randint(lo, hi)))


@pytest.mark.parametrize("seed", range(6))
def test_cider_matches_pycocoevalcap_random(seed):
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(rng.choice([4, 8, 30]))]   # small vocabularies give many shared n-grams
    n = rng.choice([1, 2, 3, 7, 25])
    refs = [[_random_caption(rng, vocab, 1, 12) for _ in range(rng.randint(1, 6))] for _ in range(n)]
    preds = []
    for r in refs:
        kind = rng.random()
        if kind < 0.15:
            preds.append("")                                   # empty prediction
        elif kind < 0.3:
            preds.append(rng.choice(r))                        # identical to a reference
        elif kind < 0.4:
            preds.append(" ".join([rng.choice(vocab)] * rng.randint(1, 9)))   # one word repeated
        else:
            preds.append(_random_caption(rng, vocab, 1, 15))
    corpus, per = _oracle(preds, refs)
    ours = cider_scores(preds, refs, tokenize=False)
    assert all(_close(a, b) for a, b in zip(ours, per)), (ours, per)
    assert _close(cider(preds, refs, tokenize=False), corpus)


HAND_MADE = [
    # (predictions, references)
    (["a man riding a horse", "a cat on a mat"],
     [["a man riding a horse"], ["a cat sitting on a mat", "the cat is on the mat", "a mat"]]),
    (["", "a dog"], [["a dog runs"], ["a dog"]]),                                    # empty prediction
    (["dog dog dog dog dog dog", "a dog"], [["a dog"], ["dog"]]),                    # repeated word, clipping
    (["x"], [["x"]]),                                                                # one sample: idf is log 1 = 0
    (["a b c d e f g h i j k l m n o p", "a"], [["a"], ["a b c d e f g h i j k l m n o p"]]),   # length penalty
    (["the the the", "a b", "c"], [["the", "the the"], ["a b", "a b", "b a", "a"], ["d"]]),
]


@pytest.mark.parametrize("preds,refs", HAND_MADE)
def test_cider_matches_pycocoevalcap_hand_made(preds, refs):
    corpus, per = _oracle(preds, refs)
    assert all(_close(a, b) for a, b in zip(cider_scores(preds, refs, tokenize=False), per))
    assert _close(cider(preds, refs, tokenize=False), corpus)


def test_cider_end_to_end_with_java_tokenizer(java_tokenized):
    """Raw captions through our tokenizer + CIDEr-D equal COCO's PTBTokenizer + CIDEr-D (as COCOEvalCap runs them)."""
    rng = random.Random(0)
    idx = list(range(len(CAPTIONS)))
    preds, refs, tok_preds, tok_refs = [], [], [], []
    for i in idx:
        r = rng.sample(idx, rng.randint(1, 4))
        preds.append(CAPTIONS[i])
        refs.append([CAPTIONS[j] for j in r])
        tok_preds.append(java_tokenized[i])
        tok_refs.append([java_tokenized[j] for j in r])
    corpus, per = _oracle(tok_preds, tok_refs)
    assert all(_close(a, b) for a, b in zip(cider_scores(preds, refs), per))
    assert _close(cider(preds, refs), corpus)


def test_cider_golden_hand_computed():
    # N = 2 samples, df = 1 for every n-gram, so each weight is tf · log 2 and each k-gram vector is a multiple of the
    # reference's. Sample 1 ("a b" vs "a b"): cosine 1 for k = 1, 2, no 3-/4-grams, equal lengths → 10 · (1+1)/4 = 5.
    # Sample 2 ("c" vs "c"): only k = 1 → 10 · 1/4 = 2.5. Corpus: (5 + 2.5) / 2 = 3.75.
    assert cider_scores(["a b", "c"], [["a b"], ["c"]]) == pytest.approx([5.0, 2.5])
    assert cider(["a b", "c"], [["a b"], ["c"]]) == pytest.approx(3.75)
    # One sample: log N = log 1 = 0 makes every weight 0 (COCO gives 0 too).
    assert cider(["a dog"], [["a dog"]]) == 0.0


def test_cider_rejects_bad_input():
    with pytest.raises(ValueError, match="2 predictions but 1"):
        cider(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="non-empty list"):
        cider(["a"], [[]])
    with pytest.raises(ValueError, match="non-empty list"):
        cider(["a"], ["a"])   # a bare string is not a list of captions


_PIECES = ["a", "dog", "Dog's", "can't", "5'11\"", "'90s", "½", "😀", "c#", "a!b", "C++", "U.S.", "e.g.", "$5",
           "1,000.5", "(x)", "[y]", "{z}", "--", "...", "“q”", "‘s’", "http://a.b/c?d=1", "x@y.com", "-", "&", "#1",
           "naïve", "Ünï", "\t", "  ", "'", '"', "`", "%", "3:15", "p.m.", "w/", "x²", "20°C"]


@pytest.mark.parametrize("seed", range(3))
def test_java_tokenizer_and_cider_match_pycocoevalcap_random(seed, java_tokenized):
    """Random captions from awkward pieces: our Java runner = pycocoevalcap's PTBTokenizer token for token, and
    CIDEr-D with the default tokenizer = PTBTokenizer + Cider as COCOEvalCap runs them."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    from mome.eval.metrics import java_ptb_tokenize

    rng = random.Random(seed)
    caps = [" ".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 8))) for _ in range(40)]
    theirs = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(caps)})
    assert java_ptb_tokenize(caps) == [theirs[i][0] for i in range(len(caps))]
    preds, refs = caps[:10], [caps[10 + 3 * i:13 + 3 * i] for i in range(10)]
    gts = PTBTokenizer().tokenize({i: [{"caption": r} for r in rs] for i, rs in enumerate(refs)})
    res = PTBTokenizer().tokenize({i: [{"caption": p}] for i, p in enumerate(preds)})
    corpus, per = pycoco_cider.Cider().compute_score(gts, res)
    assert all(_close(a, b) for a, b in zip(cider_scores(preds, refs), per))
    assert _close(cider(preds, refs), corpus)


def test_python_port_matches_java_random(java_tokenized):
    """The no-Java fallback on 300 seeded captions of awkward pieces: token for token the Java tokenizer's output."""
    from mome.eval.metrics import java_ptb_tokenize

    rng = random.Random(7)
    caps = [" ".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 8))) for _ in range(300)]
    diffs = [(c, j, ptb_tokenize(c)) for c, j in zip(caps, java_ptb_tokenize(caps)) if ptb_tokenize(c) != j]
    assert not diffs, "\n".join(f"{c!r}: java {j!r}, ours {o!r}" for c, j, o in diffs)


def test_java_tokenizer_keeps_one_line_per_caption(java_tokenized):
    """A caption with a line break of its own (\\r, \\u2028, …) must not shift the captions after it (COCO's wrapper
    replaces only \\n)."""
    from mome.eval.metrics import java_ptb_tokenize

    assert java_ptb_tokenize(["a\rb", "c\u2028d", "", "e\nf", "g"]) == ["a b", "c d", "", "e f", "g"]
    assert java_ptb_tokenize([]) == []
