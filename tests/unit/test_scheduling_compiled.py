"""The opt-in compiled simulator's guard: a build is used only when it was made from the tree's
current scheduling sources (building one takes minutes and a C compiler, so no test builds it;
`bench/scheduling.py --compiled` reports whether its run was compiled)."""

from __future__ import annotations

import shutil
from pathlib import Path

from imagefleet.scheduling.simulator.compiled import DIGEST_FILE, ROOT, check, sources_digest


def test_a_missing_or_stale_build_is_refused_and_a_current_one_accepted(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "imagefleet" / "scheduling", tree / "imagefleet" / "scheduling")
    build = tmp_path / "build"
    build.mkdir()
    assert "no compiled simulator" in (check(build, tree) or "")
    (build / DIGEST_FILE).write_text(sources_digest(tree) + "\n")
    assert check(build, tree) is None
    ranking = tree / "imagefleet" / "scheduling" / "ranking.py"
    ranking.write_text(ranking.read_text() + "\n# an edit after the build\n")
    assert "stale" in (check(build, tree) or "")
