"""AppTest of the issue types in the app: counts on Home, the Duplicates page (keep one / one label, one undo group
each) and the "none of the classes" action. A small duplicate set from the digits, scanned with the pixels encoder."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from _app_helpers import grid, grid_decide, grid_ids, open_app  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from clipcleaner_core.decisions import ReviewStore  # noqa: E402
from clipcleaner_core.ood import NONE_OF_THE_CLASSES  # noqa: E402
from clipcleaner_core.workspace import Workspace  # noqa: E402


@pytest.fixture(scope="module")
def dup_ws(tmp_path_factory) -> Path:
    from clipcleaner_core.config import EncoderConfig
    from clipcleaner_core.pipeline import scan
    from clipcleaner_core.synthetic import write_duplicate_set

    d = tmp_path_factory.mktemp("dupapp")
    info = write_duplicate_set(d / "data", n_exact=6, n_near=4, n_shifted=0, limit=300, seed=0)
    scan(info["labels"], d / "ws", classes_file=info["classes_file"], encoder=EncoderConfig(encoder="pixels"))
    return d / "ws"


def _app(ws: Path, page: str | None = None) -> AppTest:
    return open_app(ws, page)


def _current(ws: Path):
    with ReviewStore.for_workspace(ws) as st:
        return st.current().set_index("sample_id"), st.history()


def test_home_counts_issue_types(dup_ws):
    at = _app(dup_ws)
    metrics = {m.label: m.value for m in at.metric}
    s = Workspace(dup_ws).scores()
    assert metrics["Duplicate"] == f"{int(s['dup_flag'].sum()):,}" and int(s["dup_flag"].sum()) >= 20
    assert metrics["Label conflict"] == f"{int(s['dup_conflict'].sum()):,}"
    assert "None of the classes" in metrics and "Image quality" in metrics


def test_duplicates_page_keep_one_and_one_label_are_one_undo_group_each(dup_ws):
    s = Workspace(dup_ws).scores()
    at = _app(dup_ws, "pages/duplicates.py")
    assert any("groups" in c.value for c in at.caption)
    at.toggle(key="dup_conflict_only").set_value(True).run()
    assert not at.exception
    at.button(key="dup_keep_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    cur, hist = _current(dup_ws)
    group = s.loc[s["sample_id"].isin(cur.index), "dup_group"].unique()
    assert len(group) == 1 and group[0] >= 0
    members = s[s["dup_group"] == group[0]]
    acts = cur.loc[members["sample_id"], "action"]
    assert sorted(acts) == ["accept"] + ["exclude"] * (len(members) - 1)
    assert hist["group_id"].nunique() == 1 if "group_id" in hist else True
    # undo reverts the whole group at once
    at.button(key="dup_undo").click().run()
    cur, _ = _current(dup_ws)
    assert cur.empty or cur.reindex(members["sample_id"])["action"].isna().all()
    # one label for all
    at.selectbox(key="dup_label").set_value("three").run()
    at.button(key="dup_label_go").click().run()
    assert not at.exception
    cur, _ = _current(dup_ws)
    got = cur.loc[members["sample_id"]]
    assert ((got["action"] == "relabel") & (got["label"] == "three") | (got["action"] == "accept")).all()
    assert (members.set_index("sample_id").loc[got.index[got["action"] == "accept"], "label"] == "three").all()


def test_none_of_the_classes_action_records_an_exclude_with_that_reason(dup_ws):
    at = _app(dup_ws, "pages/suspects.py")
    sid = grid_ids(at, "sus")[0]
    grid_decide(at, "sus", sid, "none")  # the E key / the card's "None" button
    assert not at.exception, [e.value for e in at.exception]
    assert grid(at, "sus")["message"]["text"].endswith(f"({NONE_OF_THE_CLASSES}). Undo: Z")
    _, hist = _current(dup_ws)
    last = hist.iloc[0]
    assert last["sample_id"] == sid and last["action"] == "exclude" and last["note"] == NONE_OF_THE_CLASSES
