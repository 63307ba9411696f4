"""Inference of the IR from plain Ray code (the 2018 draft's future work).

    @irfront.infer                  # or: with irfront.infer(): ...
    def main(): ...plain Ray code...

At run time (``session``): ``.remote()`` calls are recorded up to an evaluation point,
matched to IR patterns and evaluated through the IR (``match``); what is not recognised
runs as plain Ray. Without running (``analyze``): the code's AST is read and the IR it
would infer reported.
"""
