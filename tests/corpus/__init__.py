"""A differential corpus: plain Ray programs written the way Ray's documentation teaches,
run plainly and under ``irfront.infer`` (``run.py``; ``tests/test_infer_corpus.py``)."""
