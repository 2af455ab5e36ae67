"""The ``clipcleaner`` command line. Every command calls the same core functions as the Streamlit app."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__


class _TqdmProgress:
    """``progress(stage, done, total)`` callback drawing one tqdm bar per stage (on stderr)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bars: dict = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(total=total, desc=stage, unit="img" if stage == "embed" else "step",
                                          initial=done, dynamic_ncols=True, file=sys.stderr)
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    def close(self) -> None:
        for b in self.bars.values():
            b.close()


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


def cmd_demo(a: argparse.Namespace) -> int:
    from .demo import write_demo

    s = write_demo(a.dir, noise=a.noise, rate=a.rate, seed=a.seed)
    print(f"wrote {s['samples']} digit images with {s['flipped']} noisy labels ({s['noise']}, rate {s['rate']}) "
          f"to {a.dir}")
    print(f"next: clipcleaner scan {s['labels']} --classes {s['classes_file']} --workspace WS --encoder pixels")
    print(f"      clipcleaner evaluate WS --truth {s['truth']}")
    return 0


def cmd_scan(a: argparse.Namespace) -> int:
    from .config import EncoderConfig, ScoreConfig, from_arguments
    from .guards import UnsafeTargetError, workspace_folder_problem
    from .pipeline import scan

    scoring = from_arguments(a, ScoreConfig)  # before anything is read or written
    encoder = from_arguments(a, EncoderConfig)
    problem = None if a.force else workspace_folder_problem(a.workspace)
    if problem:
        raise UnsafeTargetError(f"{problem}, or pass --force to create the workspace there anyway")
    progress = _TqdmProgress(enabled=not a.quiet)
    try:
        r = scan(a.data, a.workspace, root=a.root, classes_file=a.classes, allow_outside_root=a.allow_outside_root,
                 encoder=encoder, scoring=scoring, descriptions=a.descriptions,
                 progress=progress, log=_log if not a.quiet else None)
    finally:
        progress.close()
    if a.layout and len(r.scores):
        _compute_layouts(r.workspace, not a.quiet)
    print(f"workspace: {r.workspace.path}")
    print(f"scored {len(r.scores)} samples, {int(r.scores['flagged'].sum()) if len(r.scores) else 0} flagged "
          f"by '{scoring.method}'; criteria used: {', '.join(r.settings.detection.criteria_used) or 'none'}")
    if not r.settings.zero_shot.available:
        print(f"note: {r.settings.zero_shot.reason}")
    from .issues import summary_lines

    for line in summary_lines(r.scores) if len(r.scores) else []:
        print(f"issues: {line}")
    if len(r.problems):
        print(f"{len(r.problems)} sample(s) could not be used:")
        for reason in r.problems["reason"].head(a.show_problems):
            print(f"  - {reason}")
        if len(r.problems) > a.show_problems:
            print(f"  … and {len(r.problems) - a.show_problems} more (see {r.workspace.artifact_path('dataset')})")
    for note in r.settings.notes:
        print(f"note: {note}")
    if len(r.orphans):
        print(f"{len(r.orphans)} review decision(s) belong to samples not scored in this scan; they are kept "
              f"and apply again if the sample comes back:")
        rows = list(zip(r.orphans["sample_id"], r.orphans["action"], r.orphans["reason"]))
        for sid, action, reason in rows[:a.show_problems]:
            print(f"  - {sid} ({action}): {reason}")
        if len(rows) > a.show_problems:
            print(f"  … and {len(rows) - a.show_problems} more")
    if len(r.scores) == 0:
        print(f"clipcleaner scan: error: no usable image in {a.data} ({len(r.problems)} unusable sample(s) "
              f"listed above and in {r.workspace.artifact_path('dataset')}); nothing was scored", file=sys.stderr)
        return 1
    return 0


def _compute_layouts(ws, show: bool) -> None:
    """PCA and UMAP of the embeddings into the workspace cache (the app's embedding map then opens at once)."""
    import time

    from .layout import layout

    for kind in ("pca", "umap"):
        t0 = time.perf_counter()
        progress = _TqdmProgress(enabled=show)
        try:
            layout(ws, kind, progress=progress)
        finally:
            progress.close()
        if show:
            _log(f"layout: {kind} ready in {time.perf_counter() - t0:.1f} s (cached in {ws.cache_dir})")


def cmd_layout(a: argparse.Namespace) -> int:
    from .workspace import Workspace

    ws = Workspace(a.workspace).require()
    _compute_layouts(ws, True)
    print(f"layouts cached in {ws.cache_dir}")
    return 0


def cmd_rescore(a: argparse.Namespace) -> int:
    from .config import ScoreConfig, from_arguments
    from .pipeline import rescore

    scoring = from_arguments(a, ScoreConfig)
    progress = _TqdmProgress()
    try:
        r = rescore(a.workspace, scoring, progress=progress, log=_log)
    finally:
        progress.close()
    print(f"rescored {len(r.scores)} samples, {int(r.scores['flagged'].sum())} flagged by '{scoring.method}'")
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    from .evaluate import evaluate_workspace, format_table

    res = evaluate_workspace(a.workspace, a.truth)
    print(json.dumps(res, indent=2) if a.json else format_table(res))
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from .decisions import resolve_store_url
    from .export import check_imagefolder_target, export_csv, export_imagefolder, export_report

    if a.imagefolder:  # refuse a folder it must not replace before writing anything
        check_imagefolder_target(a.workspace, a.imagefolder)
    db_url, _ = resolve_store_url(a.workspace, a.db)  # --db, $CLIPCLEANER_DB_URL, review.json, review.sqlite
    path, table = export_csv(a.workspace, a.out, excluded=a.excluded, undecided=a.undecided, db_url=db_url)
    print(f"wrote {len(table)} rows to {path}")
    if a.report:
        rp, _ = export_report(a.workspace, table, a.report, db_url=db_url)
        print(f"wrote report to {rp}")
    if a.imagefolder:
        info = export_imagefolder(a.workspace, table, a.imagefolder, mode=a.imagefolder_mode)
        how = info["mode"]
        if info.get("written_from_shards"):
            how += f"; {info['written_from_shards']} image(s) from inside shards written as files"
        print(f"wrote an ImageFolder of {info['images']} images ({how}) to {info['path']}")
    return 0


def _cli_reviewer(a: argparse.Namespace) -> str:
    """--reviewer, else :func:`decisions.default_reviewer` ($CLIPCLEANER_REVIEWER, else the login name)."""
    from .decisions import default_reviewer

    return a.reviewer or default_reviewer(login=True)


def _db_endpoint(spec: str, must_exist: bool) -> str:
    """A `db copy` end: a URL, a .json dump, a .sqlite/.db file, or a workspace folder (its review.sqlite)."""
    if "://" in spec:
        return spec
    p = Path(spec).expanduser()
    if p.suffix.lower() not in (".json", ".sqlite", ".sqlite3", ".db"):
        p = p / "review.sqlite"
    if must_exist and not p.is_file():
        raise FileNotFoundError(f"{p}: no review database (or dump) here")
    return str(p)


def cmd_db_copy(a: argparse.Namespace) -> int:
    from .decisions import ReviewStore, copy_decisions, dump_json, load_json

    src, dst = _db_endpoint(a.src, must_exist=True), _db_endpoint(a.dst, must_exist=False)
    if src.endswith(".json") and dst.endswith(".json"):
        raise ValueError("one side of `db copy` must be a database")
    if dst.endswith(".json"):
        with ReviewStore(src, read_only=True) as s:
            n = dump_json(s, dst)
            print(f"wrote {n} events ({len(s.current())} decisions) from {s.url} to {dst}")
        return 0
    with ReviewStore(dst) as d:
        if src.endswith(".json"):
            n = load_json(src, d)
            where = src
        else:
            with ReviewStore(src, read_only=True) as s:
                n = copy_decisions(s, d)
                where = s.url
        print(f"copied {n} new events from {where} to {d.url}; it now holds {len(d.current())} decisions")
    return 0


def cmd_db_history(a: argparse.Namespace) -> int:
    from .decisions import HISTORY_COLUMNS, open_store, resolve_store_url
    from .workspace import Workspace

    ws = Workspace(a.workspace)
    url, source = resolve_store_url(ws.path, a.db)
    if url is None and not ws.review_db.exists():
        print(f"no review decisions yet ({ws.review_db} does not exist)")
        return 0
    with open_store(ws.path, url=a.db, read_only=True) as st:
        h = st.history(sample_id=a.sample, limit=a.limit)
        print(f"review database: {st.url} ({source}); {len(h)} event(s), newest first", file=sys.stderr)
    if ws.exists() and len(h):
        paths = ws.dataset().set_index("sample_id")["path"]
        h.insert(HISTORY_COLUMNS.index("sample_id") + 1, "path", h["sample_id"].map(paths))
    if a.csv:
        from .csvio import to_safe_csv

        sys.stdout.write(to_safe_csv(h))
    elif len(h):
        cols = [c for c in ("id", "created_at", "reviewer", "kind", "sample_id", "path", "action", "label",
                            "prev_action", "prev_label", "undone", "note") if c in h.columns]
        print(h[cols].fillna("").to_string(index=False))
    return 0


def cmd_db_use(a: argparse.Namespace) -> int:
    from .decisions import ReviewStore, set_review_db

    if not a.url and not a.clear:
        from .decisions import resolve_store_url

        url, source = resolve_store_url(a.workspace)
        print(f"{a.workspace}: {url or 'review.sqlite in the workspace'} ({source})")
        return 0
    stored = set_review_db(a.workspace, None if a.clear else a.url)
    if stored is None:
        print(f"{a.workspace}: review decisions are kept in the workspace's review.sqlite")
    else:
        with ReviewStore(stored if "://" in stored else Path(a.workspace) / stored) as st:
            print(f"{a.workspace}: review decisions are kept in {st.url} ({len(st.current())} decisions there)")
        print("move existing decisions with: clipcleaner db copy WS URL")
    return 0


def cmd_db_decide(a: argparse.Namespace) -> int:
    from .decisions import open_store
    from .workspace import Workspace

    ws = Workspace(a.workspace)
    samples = ws.dataset()
    by_path = dict(zip(samples["path"].astype(str), samples["sample_id"].astype(str)))
    labels = dict(zip(samples["sample_id"].astype(str), samples["label"].astype(str)))
    ids = [by_path.get(x, x) for x in a.samples]
    unknown = [x for x, s in zip(a.samples, ids) if s not in labels]
    if unknown:
        raise ValueError(f"not in this workspace (neither sample_id nor path): {', '.join(unknown[:5])}")
    if a.action == "relabel" and a.label is None:
        raise ValueError("relabel needs --label NEW_LABEL")
    if a.action == "none":  # "none of the classes": an exclude that says why
        from .ood import none_of_the_classes_items

        items = none_of_the_classes_items(ids, [labels[s] for s in ids])
    else:
        items = [{"sample_id": s, "action": a.action, "label": a.label if a.action == "relabel" else None,
                  "given_label": labels[s], "note": a.note} for s in ids]
    with open_store(ws.path, url=a.db, reviewer=_cli_reviewer(a)) as st:
        group = st.record_many(items)
        print(f"{st.reviewer}: {a.action} on {len(ids)} sample(s) in {st.url} (undo group {group})")
    return 0


def cmd_db_undo(a: argparse.Namespace) -> int:
    from .decisions import open_store

    who = _cli_reviewer(a)
    with open_store(a.workspace, url=a.db, reviewer=who) as st:
        sids = st.undo(reviewer=None if a.anyone else who)
    print("nothing to undo" if sids is None else f"undid the last action on {len(sids)} sample(s)")
    return 0


def app_script() -> Path:
    """The review app's ``app.py``: beside the package in a source checkout, else the installed
    ``clipcleaner_app`` package of the wheel. FileNotFoundError when neither is there."""
    import importlib.util

    checkout = Path(__file__).resolve().parent.parent / "app.py"
    if checkout.is_file() and (checkout.parent / "pages" / "_ui.py").is_file():
        return checkout
    try:
        spec = importlib.util.find_spec("clipcleaner_app.app")
    except ModuleNotFoundError:
        spec = None
    if spec is not None and spec.origin and Path(spec.origin).is_file():
        return Path(spec.origin)
    raise FileNotFoundError("the review app (clipcleaner_app) is not installed with this clipcleaner; reinstall it "
                            "with `pip install clipcleaner` or `pip install -e .` from a clone")


def _store_decisions(workspace: str, db: str | None):
    """(decisions, version) of the workspace's review database (--db, $CLIPCLEANER_DB_URL, workspace.json, sqlite)."""
    from .active import _decisions_and_version
    from .workspace import Workspace

    return _decisions_and_version(Workspace(workspace).require(), db)


def cmd_refit(a: argparse.Namespace) -> int:
    from .active import refit_workspace

    decisions, version = _store_decisions(a.workspace, a.db)
    progress = _TqdmProgress(enabled=not a.json)
    try:
        rec = refit_workspace(a.workspace, decisions=decisions, decisions_version=version,
                              trusted_weight=a.trusted_weight, progress=progress)
    finally:
        progress.close()
    if a.json:
        from dataclasses import asdict

        print(json.dumps(asdict(rec), indent=2))
    else:
        print(f"refit {rec.fit_id} in {rec.seconds:.1f} s from {rec.n_trusted} trusted samples "
              f"({rec.n_accept} kept, {rec.n_relabel} relabelled, {rec.n_excluded} excluded); "
              f"{rec.flagged} flagged now; it is the current ranking")
        if rec.unknown_relabels:
            print(f"note: {rec.unknown_relabels} relabel(s) to a name outside the classes were not trained on")
    return 0


def cmd_estimate(a: argparse.Namespace) -> int:
    from .estimate import estimate_report, estimate_workspace, spot_check
    from .workspace import Workspace

    decisions, _ = _store_decisions(a.workspace, a.db)
    est = estimate_workspace(a.workspace, decisions=decisions, next_n=a.next)
    if a.json:
        print(json.dumps(estimate_report(est), indent=2))
    else:
        print(est.summary())
        print(f"reviewed {est.reviewed:,} of {est.samples:,} ({est.errors_found:,} errors found); spot check "
              f"{est.spot_check_reviewed} of {est.spot_check_size} reviewed; flagged reviewed {est.flagged_reviewed:,}")
        if est.status == "ok":
            print(f"of which ≈ {est.flagged_left:,.0f} among flagged, ≈ {est.unflagged_left:,.0f} among unflagged")
        for n in est.notes:
            print(f"note: {n}")
    if a.spot_check:
        ws = Workspace(a.workspace)
        sc = spot_check(ws)
        paths = ws.scores().set_index("sample_id")["path"]
        done = set(decisions["sample_id"].astype(str)) if len(decisions) else set()
        print(f"spot check ({sc.size} random unflagged samples; review them with `clipcleaner db decide`):",
              file=sys.stderr if a.json else sys.stdout)
        for sid in sc.sample_ids:
            print(f"{sid}\t{paths.get(sid, '')}\t{'reviewed' if sid in done else 'to review'}",
                  file=sys.stderr if a.json else sys.stdout)
    return 0


def cmd_downstream(a: argparse.Namespace) -> int:
    from .downstream import downstream_check, format_downstream

    decisions, _ = _store_decisions(a.workspace, a.db)
    r = downstream_check(a.workspace, decisions=decisions, truth_file=a.truth, undecided=a.undecided, seed=a.seed)
    print(json.dumps(r.as_dict(), indent=2) if a.json else format_downstream(r))
    return 0


def cmd_simulate(a: argparse.Namespace) -> int:
    from .simulate import simulate

    progress = _TqdmProgress(enabled=not a.json)
    try:
        r = simulate(a.workspace, a.truth, a.budget, a.strategy, refit_every=a.refit_every,
                     trusted_weight=a.trusted_weight, seed=a.seed, spot_check_size=a.spot_check, progress=progress)
    finally:
        progress.close()
    if a.json:
        print(json.dumps(r.as_dict(), indent=2))
        return 0
    print(f"strategy {r.strategy}: {r.errors_found} of {r.errors_total} errors found in {r.reviewed} reviews "
          f"({r.refits} refits, {r.seconds:.0f} s)")
    print(f"{'reviewed':>9} {'found':>6} {'left (true)':>12} {'estimate left (95%)':>24}")
    for c in r.curve:
        est = "insufficient" if c["estimate_left"] is None else \
            f"{c['estimate_left']:.0f} ({c['estimate_low']:.0f}–{c['estimate_high']:.0f})"
        print(f"{c['reviewed']:>9} {c['errors_found']:>6} {c['true_left']:>12} {est:>24}")
    print(f"spot check: {r.spot_check_reviewed} reviewed apart ({r.spot_check_errors} errors)")
    if r.estimate_status == "ok":
        print(f"errors left: {r.true_left} true, estimated {r.estimate_left:.0f} (95%: {r.estimate_low:.0f}–"
              f"{r.estimate_high:.0f}) — {'inside' if r.inside_interval else 'OUTSIDE'} the interval")
    else:
        print(f"errors left: {r.true_left} true; not estimated — {r.estimate_reason}")
    return 0


def cmd_app(a: argparse.Namespace) -> int:
    app = app_script()
    env = dict(os.environ)
    if a.workspace:
        env["CLIPCLEANER_WORKSPACE"] = str(Path(a.workspace).absolute())
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", a.address,
           "--server.port", str(a.port), "--browser.gatherUsageStats", "false"]
    if a.headless:
        cmd += ["--server.headless", "true"]
    print(f"clipcleaner app: http://{a.address}:{a.port}", file=sys.stderr)
    os.chdir(app.parent)  # Streamlit reads .streamlit/config.toml from the working folder
    os.execve(sys.executable, cmd, env)  # become the server: Ctrl-C / SIGTERM stop it, no orphan child
    return 0  # not reached


def _add_score_args(p: argparse.ArgumentParser) -> None:
    from .config import ScoreConfig, add_arguments

    add_arguments(p.add_argument_group("scoring"), ScoreConfig)


def _add_db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help="review database URL (default: $CLIPCLEANER_DB_URL, WS/review.json review_db, "
                   "else the workspace's review.sqlite)")


def _ws_command(sub, name: str, help: str, func, db: bool = True) -> argparse.ArgumentParser:
    """A subcommand on one workspace with --json (and --db): the commands of the review-learning loop."""
    p = sub.add_parser(name, help=help)
    p.add_argument("workspace")
    p.add_argument("--json", action="store_true")
    if db:
        _add_db_arg(p)
    p.set_defaults(func=func)  # database errors: one line from main()
    return p


def build_parser() -> argparse.ArgumentParser:
    from .active import DEFAULT_TRUSTED_WEIGHT

    p = argparse.ArgumentParser(prog="clipcleaner", description="Find and fix mislabelled images with CLIP.")
    p.add_argument("--version", action="version", version=f"clipcleaner {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="write the offline digits demo (images, noisy labels, truth)")
    d.add_argument("dir")
    d.add_argument("--noise", choices=("sym", "asym", "hard", "mix"), default="mix")
    d.add_argument("--rate", type=float, default=None, help="noise rate (default 0.3 for mix, else 0.2)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser("scan", help="embed and score a dataset into a workspace")
    s.add_argument("data", help="ImageFolder directory, a CSV/TSV/Parquet table with path,label columns, or "
                                "WebDataset .tar / Parquet shards with embedded images (a shard, a folder of shards "
                                "or a quoted glob such as 'data/train-*.parquet')")
    s.add_argument("--workspace", "-w", required=True)
    s.add_argument("--root", help="folder that table paths are relative to (default: the table's folder)")
    s.add_argument("--classes", help="file with one class name per line (fixes order, may add empty classes; "
                                     "line i names class number i of integer shard labels)")
    s.add_argument("--allow-outside-root", action="store_true",
                   help="allow table paths and ImageFolder symlinks that lead outside the dataset root")
    s.add_argument("--force", action="store_true",
                   help="create the workspace even in a folder that already holds other (non-clipcleaner) files")
    from .config import EncoderConfig, add_arguments

    e = s.add_argument_group("encoder")
    add_arguments(e, EncoderConfig)
    e.add_argument("--descriptions", help="YAML/JSON class -> list of description clauses for the prompts")
    _add_score_args(s)
    s.add_argument("--layout", action="store_true",
                   help="also compute the embedding map's PCA and UMAP now (UMAP's ~40 s JIT stays out of the app)")
    s.add_argument("--show-problems", type=int, default=20)
    s.add_argument("--quiet", "-q", action="store_true")
    s.set_defaults(func=cmd_scan)

    lay = sub.add_parser("layout", help="compute and cache the embedding map's PCA and UMAP layouts of a workspace")
    lay.add_argument("workspace")
    lay.set_defaults(func=cmd_layout)

    r = sub.add_parser("rescore", help="recompute scores of a workspace (new method / thresholds), no re-embedding")
    r.add_argument("workspace")
    _add_score_args(r)
    r.set_defaults(func=cmd_rescore)

    v = sub.add_parser("evaluate", help="precision / recall / F1 / AUROC of every detector against a truth file")
    v.add_argument("workspace")
    v.add_argument("--truth", required=True, help="CSV with path,label (clean labels)")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_evaluate)

    x = sub.add_parser("export", help="write the cleaned CSV (review decisions applied)")
    x.add_argument("workspace")
    x.add_argument("--out", "-o", help="CSV path (default WS/exports/cleaned.csv)")
    x.add_argument("--excluded", choices=("drop", "keep"), default="drop")
    x.add_argument("--undecided", choices=("keep", "suggested", "drop", "drop-flagged"), default="keep")
    x.add_argument("--report", help="also write a JSON report here")
    x.add_argument("--imagefolder", help="also lay out the cleaned set as an ImageFolder here")
    x.add_argument("--imagefolder-mode", choices=("link", "copy"), default="link")
    _add_db_arg(x)
    x.set_defaults(func=cmd_export)

    db = sub.add_parser("db", help="review database: shared PostgreSQL, migration, audit trail, decisions")
    dbs = db.add_subparsers(dest="db_command", required=True)
    dc = dbs.add_parser("copy", help="copy decisions + history between SQLite, PostgreSQL and JSON (idempotent)")
    dc.add_argument("src", help="workspace folder (its review.sqlite), .sqlite file, .json dump or database URL")
    dc.add_argument("dst", help="same kinds; created if missing; events already there are skipped")
    dc.set_defaults(func=cmd_db_copy)
    dh = dbs.add_parser("history", help="audit trail: who decided what, when (newest first)")
    dh.add_argument("workspace")
    _add_db_arg(dh)
    dh.add_argument("--sample", help="only this sample_id")
    dh.add_argument("--limit", type=int, default=None)
    dh.add_argument("--csv", action="store_true", help="CSV on stdout")
    dh.set_defaults(func=cmd_db_history)
    du = dbs.add_parser("use", help="set the review database of a workspace (saved in WS/review.json)")
    du.add_argument("workspace")
    du.add_argument("url", nargs="?", help="postgresql+psycopg://USER@HOST/DB (password: ~/.pgpass or PGPASSWORD)")
    du.add_argument("--clear", action="store_true", help="back to the workspace's review.sqlite")
    du.set_defaults(func=cmd_db_use)
    dd = dbs.add_parser("decide", help="record a decision for samples (one undo group)")
    dd.add_argument("workspace")
    dd.add_argument("action", choices=("accept", "relabel", "exclude", "unsure", "clear", "none"),
                    help="none: the image shows none of the classes (recorded as exclude with that note)")
    dd.add_argument("samples", nargs="+", help="sample ids or dataset paths")
    dd.add_argument("--label", help="the new label (relabel)")
    dd.add_argument("--note")
    dd.add_argument("--reviewer", help="reviewer name (default: $CLIPCLEANER_REVIEWER, else the login name)")
    _add_db_arg(dd)
    dd.set_defaults(func=cmd_db_decide)
    dn = dbs.add_parser("undo", help="undo your last action (or anyone's with --anyone)")
    dn.add_argument("workspace")
    dn.add_argument("--reviewer", help="reviewer name (default: $CLIPCLEANER_REVIEWER, else the login name)")
    dn.add_argument("--anyone", action="store_true")
    _add_db_arg(dn)
    dn.set_defaults(func=cmd_db_undo)

    rf = _ws_command(sub, "refit", "learn from the review: refit probe + ensemble on trusted labels, re-rank",
                     cmd_refit)
    rf.add_argument("--trusted-weight", type=int, default=DEFAULT_TRUSTED_WEIGHT,
                    help=f"a reviewed sample counts this many times ({DEFAULT_TRUSTED_WEIGHT})")
    es = _ws_command(sub, "estimate", "label errors left in the dataset, with a 95%% interval", cmd_estimate)
    es.add_argument("--next", type=int, default=200, help="what reviewing the next N suspects should fix (200)")
    es.add_argument("--spot-check", action="store_true", help="also list the spot-check samples to review")
    ds = _ws_command(sub, "downstream", "linear probe on noisy vs cleaned labels: accuracy on held-out samples",
                     cmd_downstream)
    ds.add_argument("--truth", help="CSV with path,label (clean labels): also report accuracy against it")
    ds.add_argument("--undecided", choices=("keep", "suggested", "drop", "drop-flagged"), default="keep",
                    help="cleaned labels: what to do with undecided samples (as export; default keep)")
    ds.add_argument("--seed", type=int, default=0)
    sm = _ws_command(sub, "simulate", "simulated review by an oracle (truth file): errors found per review",
                     cmd_simulate, db=False)
    sm.add_argument("--truth", required=True, help="CSV with path,label (clean labels): the oracle's answers")
    sm.add_argument("--budget", type=int, required=True, help="queue samples the oracle reviews")
    sm.add_argument("--strategy", choices=("active", "static", "random"), default="active")
    sm.add_argument("--refit-every", type=int, default=25, help="active: refit after this many decisions (25)")
    sm.add_argument("--trusted-weight", type=int, default=DEFAULT_TRUSTED_WEIGHT)
    sm.add_argument("--spot-check", type=int, default=None, help="spot-check size (default: the workspace's rule)")
    sm.add_argument("--seed", type=int, default=0, help="random strategy: order seed")

    ap = sub.add_parser("app", help="start the Streamlit review app")
    ap.add_argument("workspace", nargs="?")
    ap.add_argument("--port", type=int, default=8501)
    ap.add_argument("--address", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    ap.add_argument("--headless", action="store_true", help="do not open a browser")
    ap.set_defaults(func=cmd_app)
    return p


def _os_error_line(e: OSError) -> str:
    """One line for a failed file operation: the file (or the message's own), the reason, and for a full disk
    where to free space."""
    import errno

    where = e.filename if e.filename is not None else ""
    why = e.strerror or str(e)
    if e.errno == errno.ENOSPC:
        why += " (the disk is full: free some space and run the same command again)"
    return f"{where}: {why}" if where and str(where) not in why else why


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import sqlalchemy as sa

    from .dataset import DatasetError
    from .decisions import ReviewStoreError
    from .encoders import WeightsUnavailable
    from .workspace import WorkspaceError

    def fail(msg: str) -> int:
        print(f"clipcleaner {args.command}: error: {msg}", file=sys.stderr)
        return 2

    try:
        return int(args.func(args) or 0)
    except (DatasetError, WeightsUnavailable, WorkspaceError, ReviewStoreError, ValueError) as e:
        return fail(str(e))
    except OSError as e:  # a file that cannot be read or written: one line naming it, not a traceback
        return fail(_os_error_line(e))
    except sa.exc.DBAPIError as e:
        return fail(f"review database error: {str(e.orig or e).strip().splitlines()[0]}")
    except KeyboardInterrupt:
        print(f"\nclipcleaner {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
