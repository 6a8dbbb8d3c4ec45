"""BLEU-4 and ROUGE-L against hand-computed values."""

from __future__ import annotations

import math

import pytest

from mumo_ds.eval.caption_metrics import corpus_bleu, rouge_l


def test_identical_captions_score_one():
    hyp = ["an upbeat funk track with slap bass"]
    assert corpus_bleu(hyp, [hyp]) == pytest.approx(1.0)
    assert rouge_l(hyp, [hyp]) == pytest.approx(1.0)


def test_bleu_by_hand():
    # hyp 6 words, ref 7 words: every 1-gram matches (6/6); n-grams across "wide arms" do not:
    # 2-grams 4/5, 3-grams 3/4, 4-grams 2/3; brevity penalty exp(1 - 7/6)
    hyp = ["a slow dance with wide arms"]
    ref = [["a slow dance with wide open arms"]]
    precisions = [6 / 6, 4 / 5, 3 / 4, 2 / 3]
    expected = math.exp(1 - 7 / 6) * math.exp(sum(math.log(p) for p in precisions) / 4)
    assert corpus_bleu(hyp, ref) == pytest.approx(expected)
    assert corpus_bleu(["totally different words here"], ref) == 0.0


def test_rouge_l_by_hand():
    # LCS("a b c d", "a c d e") = 3: precision 3/4, recall 3/4, F = 0.75 for any beta
    assert rouge_l(["a b c d"], [["a c d e"]]) == pytest.approx(0.75)
    # best reference wins
    assert rouge_l(["a b c d"], [["x y", "a b c d"]]) == pytest.approx(1.0)
    p, r, beta = 2 / 4, 2 / 2, 1.2
    assert rouge_l(["a b c d"], [["a d"]]) == pytest.approx((1 + beta**2) * p * r / (r + beta**2 * p))


def _gather_on_rank(rank: int, port: int, out: str) -> None:
    import json

    import torch.distributed as dist

    from mumo_ds.eval.caption_metrics import caption_scores
    from mumo_ds.training.validation import gather_captions

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    hyps = [["a funky bass line"], ["slow sad piano", "a waltz"]][rank]  # rank 0 matches, rank 1 does not
    refs = [[["a funky bass line"]], [["fast drums and bass"], ["a dancer spins"]]][rank]
    scores = caption_scores(*gather_captions(hyps, refs))
    with open(f"{out}.{rank}", "w") as f:
        json.dump(scores, f)
    dist.destroy_process_group()


def test_validation_scores_every_ranks_captions_as_one_corpus(tmp_path):
    """Two ranks, one matching caption on one and two non-matching on the other: the scores are the corpus's, the
    same on both ranks, not the mean of the per-rank scores (1.0 and 0.0)."""
    import json
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_gather_on_rank, args=(port, str(tmp_path / "scores")), nprocs=2)
    got = [json.loads((tmp_path / f"scores.{rank}").read_text()) for rank in (0, 1)]
    hyps = ["a funky bass line", "slow sad piano", "a waltz"]
    refs = [["a funky bass line"], ["fast drums and bass"], ["a dancer spins"]]
    assert got[0] == got[1] == {"bleu4": corpus_bleu(hyps, refs), "rouge_l": rouge_l(hyps, refs)}
    assert got[0]["rouge_l"] != pytest.approx(0.5)  # what averaging the two ranks' scores gave
