"""Inference of the IR from plain Ray code (the 2018 draft's future work).

    @irfront.infer                  # or: with irfront.infer(): ...
    def main(): ...plain Ray code...

At run time (``session``): ``.remote()`` calls are recorded up to an evaluation point,
matched to IR patterns (``match``) and evaluated through the IR; what is not recognised
runs as plain Ray. Without running (``analyze``): the code's AST is read and the IR it
would infer reported.
"""
from irfront.inference.analyze import Analysis, analyze
from irfront.inference.refs import DeferredActor, DeferredRef, is_deferred
from irfront.inference.session import Session, explain_inferred, infer, last_session

__all__ = ["Analysis", "DeferredActor", "DeferredRef", "Session", "analyze", "explain_inferred", "infer",
           "is_deferred", "last_session"]
