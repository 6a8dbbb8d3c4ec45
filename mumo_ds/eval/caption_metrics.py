"""Caption metrics: corpus BLEU-4 (Papineni et al. 2002) and ROUGE-L (Lin 2004), on whitespace tokens.

Both take one hypothesis and a list of references per item. Text is lower-cased and split
on whitespace; punctuation is kept attached (tokenise beforehand for another convention).
CIDEr is not included: no maintained package for it installs here.
"""

from __future__ import annotations

import math
from collections import Counter


def tokens(text: str) -> list[str]:
    return text.lower().split()


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def corpus_bleu(hypotheses: list[str], references: list[list[str]], max_n: int = 4) -> float:
    """Corpus BLEU with uniform weights up to ``max_n``-grams and the brevity penalty.

    Clipped n-gram counts are summed over the corpus before the geometric mean (no smoothing):
    a corpus with no matching 4-gram scores 0, as in the standard definition.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    matches, totals = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for hyp, refs in zip(hypotheses, references):
        h = tokens(hyp)
        rs = [tokens(r) for r in refs]
        hyp_len += len(h)
        ref_len += min((abs(len(r) - len(h)), len(r)) for r in rs)[1]  # closest reference length
        for n in range(1, max_n + 1):
            counts = _ngrams(h, n)
            best: Counter = Counter()
            for r in rs:
                best |= _ngrams(r, n)
            matches[n - 1] += sum(min(c, best[g]) for g, c in counts.items())
            totals[n - 1] += max(len(h) - n + 1, 0)
    if hyp_len == 0 or min(matches) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / max_n
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return brevity * math.exp(log_precision)


def _lcs(a: list[str], b: list[str]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], prev + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(hypotheses: list[str], references: list[list[str]], beta: float = 1.2) -> float:
    """Mean over items of the best ROUGE-L F-score against any reference (beta weights recall)."""
    scores = []
    for hyp, refs in zip(hypotheses, references):
        h = tokens(hyp)
        best = 0.0
        for ref in refs:
            r = tokens(ref)
            lcs = _lcs(h, r)
            if lcs:
                p, rec = lcs / len(h), lcs / len(r)
                best = max(best, (1 + beta**2) * p * rec / (rec + beta**2 * p))
        scores.append(best)
    return sum(scores) / len(scores) if scores else 0.0


def caption_scores(hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
    return {"bleu4": corpus_bleu(hypotheses, references), "rouge_l": rouge_l(hypotheses, references)}
