"""Every figure block in README.md and docs/*.md is what its JSON says
(scripts/doc_figures.py): a figure edited by hand, or a JSON re-measured without
rewriting the docs, fails here."""
from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "doc_figures.py")


def test_docs_match_their_json():
    p = subprocess.run([sys.executable, SCRIPT, "--check"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]


def test_readme_figures_come_from_json_with_provenance():
    """The README's measured tables are generated blocks, and their JSON records the
    commit, the tree and the load."""
    import json
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    blocks = re.findall(r"<!-- figures: (\S+) (\S+) -->", text)
    assert blocks, "README has no generated figures"
    for kind, path in blocks:
        with open(os.path.join(ROOT, path)) as f:
            data = json.load(f)
        recs = [data] if kind == "stream" else data
        for r in recs:
            p = r.get("provenance") or {}
            assert p.get("commit") and p.get("dirty") is not None, (path, p)
            assert p.get("loadavg_start") and p.get("loadavg_end"), (path, p)


def test_a_hand_edited_figure_is_caught(tmp_path):
    """The check is not vacuous: a block with one figure changed differs."""
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import doc_figures
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    m = next(b for b in doc_figures.BLOCK.finditer(text) if b.group(2) == "stream")
    body = m.group(4)
    digit = re.search(r"\d", body)
    changed = body[:digit.start()] + str((int(digit.group()) + 1) % 10) + \
        body[digit.end():]
    edited = text[:m.start(4)] + changed + text[m.end(4):]
    assert doc_figures.render(edited) != edited
    assert doc_figures.render(text) == text
