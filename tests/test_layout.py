"""The package layout's one hard rule: the library never imports its orchestrator (flows/)."""

import ast
from pathlib import Path

AUDITORS = Path(__file__).resolve().parents[1] / "auditors"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
    return out


def test_auditors_never_imports_flows():
    files = sorted(AUDITORS.rglob("*.py"))
    assert len(files) > 20, "the scan must see the package"
    offenders = {str(f.relative_to(AUDITORS.parent)): sorted(m for m in _imported_modules(f) if m.split(".")[0] == "flows")
                 for f in files}
    offenders = {f: m for f, m in offenders.items() if m}
    assert not offenders, f"auditors/ imports flows/ (move the shared code down into auditors/): {offenders}"
