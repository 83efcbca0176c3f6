"""Word-level facts about a pair of questions that a small cross-encoder under-weighs.

The verifier's cross-encoder reads both questions together, but a 6-layer model trained on
34k pairs still scores "arguments for virtue ethics" against "arguments against virtue
ethics", or "C++" against "C#", as duplicates. These features say plainly where two
questions differ; the combiner (``verifier.Combiner``) weighs them with the model's
scores. They cost a few microseconds a pair.
"""

from __future__ import annotations

import re

# A word (with C++/C#-style suffixes and decimals kept on it), or any other single
# character but space and sentence punctuation: symbols and CJK characters carry meaning
# in questions like "What is 5-3?" or "What does 才 mean?"; a question mark does not.
_TOKEN = re.compile(r"[a-z0-9]+(?:[+#]+|\.[0-9]+)?|[^\sa-z0-9?!.,;:'\"()\[\]{}]")
_STOP = frozenset(
    "a an the is are was were be been being do does did of to in on for at by with from and "
    "or as it its this that these those i me my you your we our what which who whom how why "
    "when where can could should would will shall may might must some any there their they "
    "them he she his her than then so if about into over".split())
_NEGATION = frozenset("not no never nothing without none nobody cannot dont doesnt isnt arent "
                      "wasnt cant wont didnt".split())

# Words whose swap turns a question around ("arguments for/against virtue ethics").
_OPPOSITES = {frozenset(pair.split("/")) for pair in (
    "for/against best/worst advantages/disadvantages increase/decrease before/after buy/sell "
    "men/women male/female rich/poor positive/negative good/bad love/hate like/dislike win/lose "
    "import/export first/last high/low more/less cause/effect causes/effects pros/cons "
    "benefits/drawbacks maximum/minimum fastest/slowest cheapest/expensive top/bottom").split()}

NAMES = ("word_overlap", "content_overlap", "content_only_one_side", "numbers_differ",
         "negation_differs", "first_word_same", "length_gap", "same_words_other_order",
         "symbols_differ", "opposite_words")


def tokens(text: str) -> list[str]:
    # Apostrophes dropped, so "don't" is the one word "dont" (a negation below).
    return _TOKEN.findall(text.lower().replace("\u2019", "").replace("'", ""))


def _content(words: list[str]) -> list[str]:
    """Words that carry the question's subject: not stop words, and any symbol."""
    return [w for w in words if w not in _STOP and (w.isalnum() or not w.isascii() or "+" in w or "#" in w)]


def features(asked: str, cached: str) -> list[float]:
    """The values named by ``NAMES``, in that order."""
    a, b = tokens(asked), tokens(cached)
    sa, sb = set(a), set(b)
    ca, cb = _content(a), _content(b)
    sca, scb = set(ca), set(cb)
    numbers_a = {w for w in sa if any(ch.isdigit() for ch in w)}
    numbers_b = {w for w in sb if any(ch.isdigit() for ch in w)}
    differ = sca ^ scb
    return [
        len(sa & sb) / max(1, len(sa | sb)),
        len(sca & scb) / max(1, len(sca | scb)),
        float(max(len(sca - scb), len(scb - sca))),
        float(numbers_a != numbers_b),
        float(bool(_NEGATION & sa) != bool(_NEGATION & sb)),
        float(a[:1] == b[:1]),
        abs(len(a) - len(b)) / max(1, len(a), len(b)),
        float(sca == scb and ca != cb),  # "Poles dislike Russians" / "Russians dislike Poles"
        float(any(not w.isalnum() for w in differ)),
        float(any(frozenset((x, y)) in _OPPOSITES for x in sa - sb for y in sb - sa)),
    ]
