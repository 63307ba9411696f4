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


def _provenances(data) -> list:
    """The provenance records of a JSON run file: one per run (a list of runs) or one."""
    if isinstance(data, list):
        return [r.get("provenance") if isinstance(r, dict) else None for r in data] or [None]
    return [data.get("provenance")]


def test_every_json_the_docs_cite_records_where_it_was_measured():
    """Every docs/*.json a page names (in a figures block or in its text) records the
    commit, whether the tree was dirty, the machine and the load: a figure in the docs
    traces back to the run that produced it."""
    import glob
    import json
    pages = [os.path.join(ROOT, "README.md"), *glob.glob(os.path.join(ROOT, "docs", "*.md"))]
    cited = set()
    for page in pages:
        with open(page) as f:
            cited |= set(re.findall(r"docs/[\w.-]+\.json", f.read()))
    assert len(cited) > 10, cited
    missing, bare = [], []
    for path in sorted(cited):
        full = os.path.join(ROOT, path)
        if not os.path.exists(full):
            missing.append(path)
            continue
        with open(full) as f:
            data = json.load(f)
        for p in _provenances(data):
            p = p or {}
            if not (p.get("commit") and p.get("dirty") is not None and p.get("machine")
                    and p.get("loadavg_start") and p.get("loadavg_end")):
                bare.append(path)
                break
    assert not missing, f"pages cite JSON files that do not exist: {missing}"
    assert not bare, f"JSON without the commit, tree, machine and load: {bare}"
