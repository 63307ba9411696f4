"""Lowering: IR nodes -> Ray tasks, through one submitter interface (vanilla or grouped).

options.py (what to do) -> submitter.py (how tasks reach Ray) -> context.py (results) ->
ops.py (one function per node kind) -> planner.py (the registry) -> evaluation.py
(``node.eval()``: passes, then lowering in dependency order)."""
from irfront.lowering.evaluation import EVALUATOR, Evaluator, NodePlacement
from irfront.lowering.options import (SCHEDULERS, SWITCHES, LoweringOptions, get_options,
                                      lowering_options, options_for, set_options)

__all__ = ["EVALUATOR", "Evaluator", "LoweringOptions", "NodePlacement", "SCHEDULERS",
           "SWITCHES", "get_options", "lowering_options", "options_for", "set_options"]
