"""The contract build: reproducible artifacts, --check catching drift, compiler errors with file:line."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from wrappers import build as b


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of contracts/ to break things in."""
    root = tmp_path / "contracts"
    shutil.copytree(b.CONTRACTS, root, ignore=shutil.ignore_patterns("build"))
    (root / "build").mkdir()
    for lang, ext in (("func", ".fc"), ("tolk", ".tolk")):  # keep the copy small: the registry alone
        for name in b.contract_names(lang, root):
            if name != "registry":
                (root / lang / f"{name}{ext}").unlink()
    for lang in b.LANGS:
        a = b.compile_contract("registry", lang, root)
        (root / "build" / f"registry.{lang}.json").write_text(a.to_json())
    return root


@pytest.mark.parametrize("lang", b.LANGS)
def test_build_is_reproducible_and_matches_committed(lang):
    a1 = b.compile_contract("registry", lang)
    a2 = b.compile_contract("registry", lang)
    assert a1 == a2
    committed = json.loads((b.BUILD / f"registry.{lang}.json").read_text())
    assert committed["code_hash"] == a1.code_hash and committed["sources_hash"] == a1.sources_hash
    assert a1.code.hash.hex() == a1.code_hash


@pytest.mark.parametrize("lang,ext", [("func", ".fc"), ("tolk", ".tolk")])
def test_check_names_a_contract_whose_source_changed(tree: Path, lang, ext):
    assert b.check(tree, tree / "build", log=lambda *_: None) == []
    src = tree / lang / f"registry{ext}"
    src.write_text(src.read_text() + ("\n;; changed\n" if lang == "func" else "\n// changed\n"))
    problems = b.check(tree, tree / "build", log=lambda *_: None)
    assert len(problems) == 1 and problems[0].startswith(f"registry ({lang})")


def test_check_reports_a_missing_artifact(tree: Path):
    (tree / "build" / "registry.tolk.json").unlink()
    problems = b.check(tree, tree / "build", log=lambda *_: None)
    assert problems == ["registry (tolk): no committed artifact " +
                        str((tree / "build" / "registry.tolk.json").relative_to(tree.parent))]


@pytest.mark.parametrize("lang,ext,src,line", [
    ("func", ".fc", '#include "stdlib.fc";\n() recv_internal() impure {\n  undefined_thing();\n}\n', 3),
    ("tolk", ".tolk", "tolk 1.3\n\nfun onInternalMessage(in: InMessage) {\n    undefinedThing();\n}\n", 4),
])
def test_compile_error_shows_file_and_line(tree: Path, lang, ext, src, line):
    (tree / lang / f"broken{ext}").write_text(src)
    with pytest.raises(b.BuildError) as e:
        b.compile_contract("broken", lang, tree)
    assert f"broken{ext}:{line}:" in str(e.value), str(e.value)
