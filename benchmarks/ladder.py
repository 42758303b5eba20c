"""The budget ladder (issue 11): which budget makes the dream faithful, and which one makes
a controller trained only in it win the real game?

    python benchmarks/ladder.py configs/ladder/RUNG.yaml [...] [--seed 0] [--until STAGE]
    python benchmarks/ladder.py --report           # only rewrite the results file

Each rung is a small delta file layered last over ``configs/experiments/doom_fast.yaml``
and the variant (the VAE by default) that names its own ``experiment`` (``ladder_<rung>``), and
runs through the real CLI, ``jepa-wm run``, into its own folder ``RUNS/<experiment>``, so
no rung can return another's result. A rung whose data (or V, or M, or C) is the same as an
earlier rung's is given that rung's rollout store (and V, latents) (and M) (and round 0's C:
rungs that differ only in ``iterate``) as symlinks: their bytes are the same by construction
(seeded), and their recorded wall times are the ones they cost when made. ``--until
fidelity`` stops before CMA-ES: the fidelity figures are the cheap signal.

Writes ``benchmarks/results/transfer_ladder.md``: per rung the budget, the wall time per
stage, the fidelity figures, and the dream and real scores, beside the baselines.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml
from common import cpu_name, loadavg  # benchmarks/common.py (scripts run from their folder)
from jsonargparse import Namespace

from jepa_wm.config import MAX_HOLD, data_hash
from jepa_wm.contract import STAGE, run_paths
from jepa_wm.contract import STAGE_ORDER as STAGES
from jepa_wm.io import UserError, atomic_path, read_json
from jepa_wm.pipeline import resolve

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
EXPERIMENT = ROOT / "configs" / "experiments" / "doom_fast.yaml"
VAE = ROOT / "configs" / "variants" / "vae.yaml"
#: When train-memory's revision 2 landed (commit 1930cb2: every step weighs the same in M's
#: objective): an M finished before it was trained on the old objective.
M_REVISION_2 = datetime(2026, 12, 3, 18, 20, tzinfo=timezone.utc)


def rung_config(rung: Path, variant: Path, seed: int, runs: Path):
    """The resolved config of a rung and its experiment folder ``RUNS/<experiment>``."""
    cfg = resolve([EXPERIMENT, variant, rung], seed, runs)  # the rung has the last word
    if cfg.experiment == "doom_fast":
        raise SystemExit(f"{rung}: give the rung its own `experiment:` (ladder_{rung.stem})")
    return cfg, run_paths(cfg, runs).root


#: What each shareable stage's folders depend on on top of the data and the seed: the keys
#: of V's, M's and C's stages in the stage table (the rollout store is shared when the data
#: hash alone is equal).
SHARED = tuple(tuple(k for k in STAGE[s].keys if k != "seed")
               for s in ("train-vision", "train-memory", "train-controller"))
SHARED_DIRS = (("vision", "latents"), ("memory",), ("controller",))


def stage_key(cfg, depth: int) -> str:
    """What the first ``depth`` shareable stage groups depend on, as comparable text."""
    from jepa_wm.config import to_dict

    keys = [k for group in SHARED[:depth] for k in group]
    values = (to_dict(cfg[k]) if isinstance(cfg[k], Namespace) else cfg[k] for k in keys)
    return json.dumps([data_hash(cfg), cfg.seed, *values],
                      sort_keys=True, default=str)


def share_upstream(cfg, out: Path, runs: Path) -> list[str]:
    """Symlink an earlier rung's store (same data hash), then V + latents (same V), then M
    (same M too), then C (same C too) into this rung's folder ``out`` where it has none of
    its own yet. Returns what was linked."""
    paths = run_paths(cfg, runs)
    linked = []
    for other in sorted(runs.iterdir()):
        if other == out or not other.is_dir():
            continue
        for store in other.glob(f"data/{paths.store.name}"):
            if (store / "rollouts" / "DONE.json").exists() and not paths.store.exists():
                paths.store.parent.mkdir(parents=True, exist_ok=True)
                paths.store.symlink_to(store.resolve())
                linked.append(f"store from {other.name}")
        for cell_cfg in other.glob(f"*/seed{cfg.seed}/config.yaml"):
            cell = cell_cfg.parent
            try:
                theirs = resolve([EXPERIMENT, cell_cfg], cfg.seed, runs)
            except UserError as e:  # a cell of options this code does not know (made by
                print(f"ladder: nothing shared from {cell}: {e}")  # newer code) is no match
                continue
            for depth, dirs in enumerate(SHARED_DIRS, start=1):
                done = all((cell / d / "DONE.json").exists() for d in dirs)
                if not done or stage_key(theirs, depth) != stage_key(cfg, depth):
                    break
                if (paths.cell / dirs[0]).exists():
                    continue
                paths.cell.mkdir(parents=True, exist_ok=True)
                for d in dirs:
                    (paths.cell / d).symlink_to((cell / d).resolve())
                linked.append(f"{' and '.join(dirs)} from {other.name}")
    return linked


def run_rung(rung: Path, variant: Path, seed: int, runs: Path, until: str | None) -> float:
    cfg, out = rung_config(rung, variant, seed, runs)
    out.mkdir(parents=True, exist_ok=True)
    for what in share_upstream(cfg, out, runs):
        print(f"ladder: {rung.stem}: shared {what}")
    command = [sys.executable, "-m", "jepa_wm.cli", "run", "--config", str(EXPERIMENT),
               "--config", str(variant), "--config", str(rung), "--seed", str(seed),
               "--out", str(runs)]
    if until:
        command += ["--until", until]
    start = time.perf_counter()
    with open(runs / f"{cfg.experiment}.log", "a") as log:
        subprocess.run(command, check=True, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


# -- the results file ------------------------------------------------------------------------


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _f(x, digits: int = 1) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else \
        f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _verdict(value, ok: bool, digits: int) -> str:
    return "—" if value is None else f"{'met' if ok else 'missed'} ({value:.{digits}f})"


def budget(c: dict, v_steps: int | None = None) -> str:
    """The rung's budget in one line; ``v_steps``, the steps V trained (its metrics), names
    the steps a compute budget (``max_flops``, ``max_time``) gave it, or ``max_epochs``
    when it ended V's training before ``max_steps``."""
    v, vt = c["vision_model"]["init_args"], c["vision_train"]
    m, mt, cc = c["memory_model"]["init_args"], c["memory_train"], c["controller_train"]
    steps = vt["max_steps"] if vt["max_steps"] > 0 else f"{vt['max_epochs']} ep"
    trained = "?" if v_steps is None else v_steps
    if vt.get("max_flops"):
        steps = f"{vt['max_flops']:.4g} FLOPs = {trained} steps"
    elif vt.get("max_time"):
        steps = f"{vt['max_time']:g} s = {trained} steps"
    elif v_steps is not None and 0 < v_steps < vt["max_steps"]:  # the epochs ended it first
        steps = f"{vt['max_epochs']} ep = {v_steps} steps (max_steps {vt['max_steps']})"
    done = cc["done"] + (f" > {cc.get('done_threshold')}" if cc["done"] == "threshold" else "")
    def precision(section: dict) -> str:
        return "" if section.get("precision", "32-true") == "32-true" else \
            f", {section['precision']}"

    mixture = ", one mixture per z" if m.get("shared_mixture") else ""
    mixture += f", z noise {m['z_noise']}" if m.get("z_noise") else ""
    m_speed = (", packed" if mt.get("pack") else "") + precision(mt)
    it = c.get("iterate") or {}
    rounds = (f"; then {it['rounds']} round(s) of iterative training: {it['episodes']} eps of "
              f"C (epsilon {it['epsilon']}), M +{it['memory_epochs']} ep, a new C"
              if it.get("rounds") else "")
    holds = "" if c.get("max_hold", MAX_HOLD) == MAX_HOLD else f" held 1..{c['max_hold']}"
    return (f"{c['episodes']} eps{holds}; V z {v.get('latent_dim')}, {steps} x {vt['batch_size']}, "
            f"lr {v.get('lr')}{precision(vt)}; "
            f"M {m['hidden_size']}, seq {m['seq_len']}, {mt['max_epochs']} ep x "
            f"{mt['batch_size']}, pos_w {m.get('done_pos_weight')}{mixture}{m_speed}; "
            f"C {cc['generations']} "
            f"gen, dreams {cc['max_steps']}, {done}, tau {cc['tau']}{rounds}")


def v_steps(cell: Path) -> int | None:
    """The steps the cell's V trained (its ``metrics.json``), None before it has."""
    return (_read(cell / STAGE["train-vision"].folder / "metrics.json") or {}).get("steps")


def stage_walls(cell: Path) -> dict[str, float | None]:
    """Seconds per stage of a cell; a stage shared from another rung (a symlinked folder)
    counts what it cost in the rung that made it."""
    pipe = (_read(cell / "pipeline.json") or {}).get("stages", {})
    walls = {s: (pipe.get(s) or {}).get("wall_time") for s in STAGES}
    for stage in STAGES[1:]:  # the store is shared by every cell of a seed, never linked
        folder = cell / STAGE[stage].folder
        if folder.is_symlink():
            source = (_read(folder.resolve().parent / "pipeline.json") or {})
            walls[stage] = (source.get("stages", {}).get(stage) or {}).get("wall_time")
    return walls


def m_objective(cell: Path) -> str:
    """Which objective the cell's M was trained on: ``""`` (revision 2, every step weighs the
    same) or ``"old M objective"`` (its ``DONE.json`` predates ``M_REVISION_2``)."""
    done = cell / STAGE["train-memory"].folder / "DONE.json"
    if not done.exists():
        return ""
    made = datetime.fromtimestamp(done.resolve().stat().st_mtime, timezone.utc)
    return "" if made >= M_REVISION_2 else "old M objective"


#: The tag of a row whose V train-vision would not make today from the row's config (a
#: train-vision revision since: the row is not a result of that config, and is left out of
#: the paired summaries until it is re-run).
OLD_V = "V by older code: redo"


def v_revision(cell: Path, runs: Path) -> str:
    """``OLD_V`` when the cell's V was made under another train-vision identity than its
    config gives with today's code (``vision_identity``: e.g. the task-window fix of
    2026-12-05), else ``""`` (also when that cannot be told: no V yet, or its store gone)."""
    from jepa_wm.data.store import RolloutStore
    from jepa_wm.vision.train import vision_identity

    done = _read(cell / STAGE["train-vision"].folder / "DONE.json") or {}
    pipe = _read(cell / "pipeline.json") or {}
    store = ((pipe.get("stages") or {}).get("collect") or {}).get("out")
    if not done.get("config_hash") or not store or not Path(store).is_dir():
        return ""
    cfg = resolve([EXPERIMENT, cell / "config.yaml"], pipe["seed"], runs)
    return "" if vision_identity(cfg, RolloutStore(store)) == done["config_hash"] else OLD_V


def base_rung(cell: Path) -> str | None:
    """The row name of the rung whose V this cell links (``share_upstream``), or None when
    the cell trained its own."""
    vision = cell / STAGE["train-vision"].folder
    if not vision.is_symlink():
        return None
    made = vision.resolve().parent  # runs/<experiment>/<variant>/seed<k>
    variant = made.parent.name
    return made.parents[1].name + ("" if variant == "vae" else f" [{variant}]")


def store_frames(cell: Path) -> int | None:
    """The frames in the cell's rollout store (a store deleted since: as the cell's latent
    set recorded them), None before it is collected and encoded."""
    from jepa_wm.report.runs import SeedRun
    from jepa_wm.report.stats import store_frames as frames

    n = frames(SeedRun(cell.parent.name, 0, cell, pipeline=_read(cell / "pipeline.json")))
    return None if math.isnan(n) else int(n)


def rung_rows(runs: Path) -> list[dict]:
    from jepa_wm.report import bootstrap_ci

    rows = []
    for cell_cfg in sorted(runs.glob("*/*/seed*/config.yaml")):
        cell = cell_cfg.parent
        config = yaml.safe_load(cell_cfg.read_text())
        variant = cell.parent.name  # a rung run with another V is its own row and summary
        rung = cell.parents[1].name + ("" if variant == "vae" else f" [{variant}]")
        rows.append({"rung": rung, "variant": variant,
                     "seed": config["seed"], "base": base_rung(cell),
                     "episodes": config["episodes"], "frames": store_frames(cell),
                     "budget": "; ".join(filter(None, (budget(config, v_steps(cell)),
                                                        m_objective(cell),
                                                        v_revision(cell, runs)))),
                     "wall": stage_walls(cell),
                     "cmaes_s": sum(g.get("seconds", 0.0) for g in
                                    _read(cell / "controller" / "history.json") or []),
                     "recorded": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
                     "machine": cpu_name(),
                     # the fidelity of the M the evaluated C was trained in (the last
                     # round's, when the run iterates), as evaluate recorded it
                     "fidelity": (_read(cell / "eval" / "results.json") or {}).get("fidelity")
                     or _read(cell / "fidelity" / "fidelity.json") or {},
                     "results": _read(cell / "eval" / "results.json") or {},
                     "probes": (_read(cell / STAGE["probe"].folder / "probes.json")
                                or {}).get("scores") or {}})
        if rows[-1]["results"].get("real_scores"):
            rows[-1]["results"]["real_ci"] = list(bootstrap_ci(rows[-1]["results"]["real_scores"]))
    return rows


def merged_rows(runs: Path, record: Path, write: bool = True) -> list[dict]:
    """The rows of the run folders under ``runs``, merged into those already recorded in
    ``record`` (JSON beside the results file), so a rung measured in an earlier session, whose
    run folder is gone, keeps its row. A row of the same rung, variant and seed is replaced by
    the run folder's; the merged rows are written back."""
    # strict: a record that does not parse is an error, never read as empty and overwritten
    rows = {(r["rung"], r["variant"], r["seed"]): r
            for r in (read_json(record) if record.exists() else [])}
    for r in rows.values():  # recorded on a day before revision 2's: the old M. A row of
        # that day itself keeps the tag its run folder gave it (``recorded`` is only a date)
        if (r.get("recorded") or "") < M_REVISION_2.strftime("%Y-%m-%d") and \
                "old M objective" not in r["budget"]:
            r["budget"] += "; old M objective"
    for r in rung_rows(runs) if runs.is_dir() else []:
        old = rows.get((r["rung"], r["variant"], r["seed"]))
        if old and old["results"].get("real_mean") is not None and \
                r["results"].get("real_mean") is None:
            # a partial re-run (a fresh machine, --until) never erases a finished row; its
            # V's probes are kept where they add targets (a later probe revision), and say
            # that they are of a V re-trained from its config
            if r["probes"] and r["probes"] != old.get("probes") and \
                    set(old.get("probes") or {}) <= set(r["probes"]):
                old["probes"] = r["probes"]
                old["probed"] = f"{r['recorded']}, {r['machine']}: V re-trained"
            continue
        if old and (old["results"], old["wall"]) == (r["results"], r["wall"]):
            r["recorded"] = old.get("recorded")  # as made (a run folder lives on the
            r["machine"] = old.get("machine") or r["machine"]  # machine that made it)
        rows[(r["rung"], r["variant"], r["seed"])] = r
    merged = [rows[k] for k in sorted(rows)]
    if write:  # atomically: two ladders run side by side read each other's record
        with atomic_path(record) as tmp:
            tmp.write_text(json.dumps(merged, indent=1, default=str) + "\n")
    return merged


def compared(r: dict) -> bool:
    """A row the summaries compare: it has a real score and its V is today's code's."""
    return r["results"].get("real_mean") is not None and OLD_V not in r.get("budget", "")


def seed_summary(rows: list[dict]) -> list[str]:
    """Per rung over its seeds: the mean real score with a 95% bootstrap CI over seeds (the
    report's statistics), each seed's score, and how many seeds reached 750."""
    from jepa_wm.report import bootstrap_ci

    by_rung: dict[str, list[dict]] = {}
    for r in rows:
        if compared(r):
            by_rung.setdefault(r["rung"], []).append(r)
    multi = {k: v for k, v in by_rung.items() if len(v) > 1}
    if not multi:
        return []
    lines = ["## Over seeds", "",
             ("Rungs run on more than one seed: mean of the seeds' real means, with a 95% "
              "percentile bootstrap CI over seeds (`jepa_wm.report.bootstrap_ci`)."), "",
             "| rung | seeds | real per seed | mean | 95% CI (seeds) | seeds >= 750 |",
             "|---|---|---|---:|---|---:|"]
    for rung, rs in sorted(multi.items()):
        rs = sorted(rs, key=lambda r: r["seed"])
        means = [r["results"]["real_mean"] for r in rs]
        low, high = bootstrap_ci(means)
        lines.append(f"| {rung} | {', '.join(str(r['seed']) for r in rs)} | "
                     f"{', '.join(f'{m:.1f}' for m in means)} | {sum(means) / len(means):.1f}"
                     f" | [{low:.0f}, {high:.0f}] | {sum(m >= 750 for m in means)} of "
                     f"{len(means)} |")
    return [*lines, ""]


def paired_table(pairs: dict[tuple[str, str], list[tuple[int, float, float]]],
                 heading: str, intro: str, columns: tuple[str, str, str, str]) -> list[str]:
    """Rows of paired seeds, ``(key, other key) -> [(seed, this real mean, that real
    mean)]``: per seed both means, the mean difference with a 95% percentile bootstrap CI
    over the paired seeds, the seeds ahead, and P(this > that) over all pairs of seeds
    (rliable). ``columns``: the headers of the two keys, then the names of this and that."""
    from jepa_wm.report import bootstrap_ci, p_improvement

    if not pairs:
        return []
    first, second, this, that = columns
    lines = [f"## {heading}", "", intro, "",
             (f"| {first} | {second} | seeds | {this} per seed | {that} per seed | "
              f"{this} - {that} [95% CI] | seeds {this} ahead | P({this} > {that}) |"),
             "|---|---|---|---|---|---|---:|---:|"]
    for (a, b), ps in sorted(pairs.items()):
        ps.sort()
        diff = [v - w for _, v, w in ps]
        low, high = bootstrap_ci(diff)
        lines.append(
            f"| {a} | {b} | {', '.join(str(s) for s, _, _ in ps)} | "
            f"{', '.join(f'{v:.1f}' for _, v, _ in ps)} | "
            f"{', '.join(f'{w:.1f}' for _, _, w in ps)} | {sum(diff) / len(diff):+.1f} "
            f"[{low:+.0f}, {high:+.0f}] | {sum(d > 0 for d in diff)} of {len(diff)} | "
            f"{p_improvement([v for _, v, _ in ps], [w for _, _, w in ps]):.2f} |")
    return [*lines, ""]


def vae_pairs(rows: list[dict]) -> dict[tuple[str, str], list[tuple[dict, dict]]]:
    """Each V's scored rows paired with the VAE's scored row on the same rung and seed:
    ``(rung, V) -> [(V's row, VAE's row)]`` by seed."""
    scored = [r for r in rows if compared(r)]
    vae = {(r["rung"], r["seed"]): r for r in scored if r["variant"] == "vae"}
    pairs: dict[tuple[str, str], list[tuple[dict, dict]]] = {}
    for r in scored:
        rung = r["rung"].removesuffix(f" [{r['variant']}]")
        if r["variant"] != "vae" and (rung, r["seed"]) in vae:
            pairs.setdefault((rung, r["variant"]), []).append((r, vae[(rung, r["seed"])]))
    for ps in pairs.values():
        ps.sort(key=lambda p: p[0]["seed"])
    return pairs


def variant_summary(rows: list[dict]) -> list[str]:
    """Each V run on a rung against the VAE on the same rung and seeds (issue 13's verdict)."""
    pairs = {key: [(v["seed"], v["results"]["real_mean"], w["results"]["real_mean"])
                   for v, w in ps] for key, ps in vae_pairs(rows).items()}
    return paired_table(
        pairs, "V against the VAE",
        ("Another V on a rung's budget against the VAE on the same rung and seeds (same "
         "store, M, C and evaluation seeds): the mean of the per-seed differences of the "
         "real means with a 95% percentile bootstrap CI over the seeds, and P(V > VAE) "
         "over all pairs of seeds. One seed is a sample, not a verdict."),
        ("rung", "V", "V", "VAE"))


#: The figures that say where a V's dream differs from the VAE's (``why_table``): the
#: column's name, how it reads a row, its digits.
WHY = (
    ("sharpness", lambda r: _ratio(r["fidelity"].get("hazard_last2"),
                                   r["fidelity"].get("hazard_early")), 0),
    ("Σ p(done)/ep", lambda r: r["fidelity"].get("death_sum_per_episode"), 2),
    ("data policy dream / game", lambda r: r["fidelity"].get("policy_survival_ratio"), 2),
    ("hold ratio", lambda r: r["fidelity"].get("hold_survival_ratio_max"), 2),
    ("hazard share where a fireball touches",
     lambda r: r["fidelity"].get("touching_share"), 2),
    ("C dream / real", lambda r: _ratio(r["results"].get("dream_mean"),
                                        r["results"].get("real_mean")), 2),
    ("C's deaths in the game / M's hazard there",
     lambda r: _ratio(r["results"].get("c_death_rate_game"),
                      r["results"].get("c_hazard_rate_game")), 2),
    ("z's fireball screen x R²", lambda r: r["probes"].get("probe_fireball_screen_x"), 2),
    ("z's fireball touching AP", lambda r: r["probes"].get("probe_fireball_touching"), 2),
    ("z's death next AP", lambda r: r["probes"].get("probe_death_next"), 2),
)


def _ratio(a, b):
    return None if a is None or b is None or not b or not math.isfinite(a / b) else a / b


def why_table(rows: list[dict]) -> list[str]:
    """Beside ``variant_summary``: for each V run on a rung and the VAE on the same rung and
    seeds, the mean of each ``WHY`` figure over the paired seeds, V / VAE. A probe of a row
    that links its V from another rung is that rung's row's (the same V); a figure a seed's
    row lacks is left out of that arm's mean, and the count says how many seeds it has."""
    by_key = {(r["rung"], r["seed"]): r for r in rows}
    for r in rows:  # a row that links its V: that V's probes, from the row that trained it
        base = by_key.get((r.get("base"), r["seed"]))
        if not r.get("probes") and base is not None and base.get("probes"):
            by_key[(r["rung"], r["seed"])] = {**r, "probes": base["probes"]}
    pairs = vae_pairs(list(by_key.values()))
    if not pairs:
        return []

    def mean(arm: list[dict], read, digits: int) -> str:
        values = [v for v in (read({"probes": {}, **r}) for r in arm) if v is not None]
        if not values:
            return "—"
        text = f"{sum(values) / len(values):.{digits}f}"
        return text if len(values) == len(arm) else f"{text} ({len(values)} of {len(arm)})"

    lines = ["## Where the V differs from the VAE", "",
             ("The pairs of the table above, figure by figure: the mean over the paired seeds "
              "of the V's rows / the VAE's. Sharpness: M's hazard in a death's last 2 steps "
              "over its hazard 32+ steps before an episode's end; the data policy's and a "
              "held action's dream / game survival (1 is a faithful dream); the share of M's "
              "hazard on the steps where a fireball touches the player; C's dream / real "
              "score; C's deaths per step in the game over M's hazard on those steps (above "
              "1: M underrates C's real states); what linear probes of z find on held-out frames: "
              "the nearest fireball's screen x (R²), whether one touches the player and "
              "whether the step from this frame ends in a death (average precision), of "
              "the rung whose V a row links. \"(n of N)\": a figure "
              "only n of the seeds' rows have."), "",
             "| rung | V | seeds | " + " | ".join(name for name, _, _ in WHY) + " |",
             "|---|---|---|" + "---|" * len(WHY)]
    for (rung, variant), ps in sorted(pairs.items()):
        ours, theirs = [p[0] for p in ps], [p[1] for p in ps]
        lines.append(f"| {rung} | {variant} | {', '.join(str(r['seed']) for r in ours)} | "
                     + " | ".join(f"{mean(ours, read, d)} / {mean(theirs, read, d)}"
                                  for _, read, d in WHY) + " |")
    return [*lines, ""]


def probe_table(rows: list[dict]) -> list[str]:
    """What each row's V knows (issue 13): its held-out probe scores, one column per target
    any row has: the rows that trained their own V (a rung that links another's V has the
    same scores), and only those recorded with probes."""
    probed = [r for r in rows if r.get("probes") and not r.get("base")]
    if not probed:
        return []
    keys = sorted({k for r in probed for k in r["probes"]})
    names = [k.removeprefix("probe_") for k in keys]
    return ["", "## What V knows (probes)", "",
            ("Linear probes of each row's V (`jepa_wm/probes.py`): fitted on the store's "
             "training episodes, scored on the episodes V held out; R² for every target but "
             "`fireball_in_view` (accuracy, beside always guessing the majority class, "
             "`fireball_in_view_base`) and `fireball_touching` (average precision: the "
             "nearest fireball hitting the player now; chance is `fireball_touching_base`, "
             "the share of such frames). `probed`: where a row's probes come from a later "
             "re-run of its V (the same config, trained again, so not the V its scores "
             "are of); empty where they are of the run's own V."), "",
            "| rung | seed | " + " | ".join(names) + " | probed |",
            "|---|---:|" + "---:|" * len(keys) + "---|",
            *(f"| {r['rung']}{' (' + OLD_V + ')' if OLD_V in r.get('budget', '') else ''} | "
              f"{r['seed']} | " + " | ".join(_f(r["probes"].get(k), 3) for k in keys)
              + f" | {r.get('probed', '')} |" for r in probed)]


def option_summary(rows: list[dict]) -> list[str]:
    """Each rung whose store and V are linked from another rung (``share_upstream``: an
    option checked on the same data and V) against that rung on the same seeds."""
    scored = {(r["rung"], r["seed"]): r for r in rows
              if r["results"].get("real_mean") is not None}
    pairs: dict[tuple[str, str], list[tuple[int, float, float]]] = {}
    for (rung, seed), r in scored.items():
        base = r.get("base")
        if base and (base, seed) in scored:
            pairs.setdefault((rung, base), []).append(
                (seed, r["results"]["real_mean"], scored[(base, seed)]["results"]["real_mean"]))
    return paired_table(
        pairs, "Rungs on the same store and V",
        ("A rung whose store and V (or also M) are linked from another rung differs from it "
         "only after V (M's training, C's search, a round): its real means against that "
         "rung's on the same seeds, the mean per-seed difference with a 95% percentile "
         "bootstrap CI over the seeds, and P(rung > other) over all pairs of seeds. The "
         "other rung is the one that trained the V (whichever ran first on those seeds)."),
        ("rung", "other", "rung", "other"))


def pair_rows(rows: list[dict], rung: str, other: str) -> list[str]:
    """``rung`` against ``other`` on the seeds both scored (e.g. a speed option against the
    budget it speeds up, on the same stores): the paired real means with a 95% CI over the
    seeds, then each seed's fidelity figures side by side."""
    scored = {(r["rung"], r["seed"]): r for r in rows if compared(r)}
    names = {r["rung"] for r in rows}
    for name in (rung, other):
        if name not in names:
            raise SystemExit(f"--pair: no rung {name!r} in the record; it has "
                             f"{', '.join(sorted(names))}")
    seeds = sorted(s for (n, s) in scored if n == rung and (other, s) in scored)
    table = paired_table(
        {(rung, other): [(s, scored[(rung, s)]["results"]["real_mean"],
                          scored[(other, s)]["results"]["real_mean"]) for s in seeds]},
        f"{rung} against {other}",
        "Real means on the seeds both rungs scored, then their fidelity seed by seed.",
        ("rung", "other", "rung", "other"))
    lines = table or [f"{rung} and {other} have no scored seed in common"]
    lines += ["| seed | rung | " + " | ".join(name for name, _, _ in WHY) + " |",
              "|---:|---|" + "---:|" * len(WHY)]
    for s in seeds:
        for name in (rung, other):
            lines.append(f"| {s} | {name} | " + " | ".join(
                _f(read({"probes": {}, **scored[(name, s)]}), digits)
                for _, read, digits in WHY) + " |")
    return lines


def touching(f: dict) -> str:
    """M / game where a fireball touches, with the share of M's hazard there against the
    share of the game's deaths there when the run recorded them."""
    ratio = _f(f.get("touching_ratio"), 2)
    if f.get("touching_share") is None:
        return ratio
    return f"{ratio} ({_f(f['touching_share'], 2)} / {_f(f.get('touching_death_share'), 2)})"


def sharpness(f: dict) -> str:
    """M's hazard per 1,000 steps far from a death / in a death's last 2 steps (ratio)."""
    far, last = f.get("hazard_early"), f.get("hazard_last2")
    if far is None or last is None or not (math.isfinite(far) and math.isfinite(last)):
        return "—"
    return f"{1e3 * far:.2f} / {1e3 * last:.0f} ({last / far:.0f}x)" if far > 0 else "—"


def write_results(runs: Path, out: Path, note: str) -> str:
    rows = merged_rows(runs, out.with_suffix(".json"))
    lines = ["# The budget ladder (issue 11)", "",
             ("- command: `python benchmarks/ladder.py configs/ladder/RUNG.yaml ...` (each "
             "rung: `jepa-wm run --config configs/experiments/doom_fast.yaml --config "
             "configs/variants/vae.yaml --config RUNG --seed S --out runs/ladder`, into "
             "`runs/ladder/<the rung's experiment>`)"),
             (f"- written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; machine: "
             f"{cpu_name()}, {os.cpu_count()} CPUs; {note}"),
             ("- fidelity: on M's held-out episodes (10% of the store), the data policy played "
             "in 1024 dreams at the training tau against its real episodes; hold ratio: the "
             "largest dream/game survival ratio of one action held a whole episode (16 real "
             "episodes per action; — for runs that predate it: "
             "`benchmarks/results/hold_survival.md`); real: 50 episodes on the fixed "
             "evaluation seeds (`eval_seeds(seed, 50)`)"),
             ("- M / game where a fireball touches: M's teacher-forced hazard per step on "
              "the held-out steps where the nearest fireball is closer than "
              "`jepa_wm.envs.vizdoom.TOUCHING` (the game's recorded state) over the game's deaths "
              "per step there (`fidelity.json` `touching_ratio`), and in brackets the share "
              "of M's whole held-out hazard on those steps against the share of the game's "
              "deaths there (`touching_share`, `touching_death_share`: a blurry head spreads "
              "its hazard onto steps where nothing hits, whatever its calibration); — for "
              "runs that predate them: `benchmarks/hazard_states.py` reads both from a "
              "finished run"),
             ("- hazard far from / at a death: M's teacher-forced hazard on the held-out "
              "episodes, per 1,000 steps, averaged over the steps 32 or more before an "
              "episode's end and over the last 2 steps before a death (`fidelity.json` "
              "`hazard_early`, `hazard_last2`), with their ratio: a death head that places "
              "its deaths where they happen has a low first figure and a high ratio"),
             ("- M's objective: every M before 2026-12-03 18:20 UTC (\"old M objective\" in "
              "its budget) divided each batch's losses by its real steps, which inflated its "
              "death head at each data epoch's end (`docs/RESULTS.md`, session 12); later "
              "ones weigh every step the same (train-memory revision 2)"),
             ("- C's real episodes: M's hazard summed along each of the evaluated C's 50 real "
              "episodes as they were played, against the share that died (evaluate revision "
              "2; — for runs evaluated before it): under it, M rates C's own states safer "
              "than the game; C's deaths per 1,000 steps in the game, M's hazard on those "
              "steps, and C's deaths per 1,000 dream steps (evaluate revision 3): game / M "
              "above 1 is the death head underrating C's states, M / dream above 1 the "
              "dream's trajectories reaching safer states than the game's"),
             ("- baselines on seed 0's evaluation seeds: `benchmarks/results/baselines_seeds0.md` "
              "(each seed has its own 50 evaluation seeds)"),
             "", *seed_summary(rows), *variant_summary(rows), *why_table(rows),
             *option_summary(rows),
             "## Budgets", "",
             "| rung | seed | budget | measured |", "|---|---:|---|---|"]
    lines += [f"| {r['rung']} | {r['seed']} | {r['budget']} | {r.get('recorded', '—')}"
              f"{', ' + r['machine'] if r.get('machine') else ''} |" for r in rows]
    lines += ["", "## Dream fidelity and scores", "",
              ("| rung | seed | Σ p(done)/ep | Brier | hazard per 1k steps: far from / at a "
              "death | M / game where a fireball touches | survival dream / game (ratio) | "
              "open-loop MSE @10 / copy | @50 / copy | hold ratio | C dream | C real ± std | "
              "real 95% CI | C's real episodes: Σ p(done) / died | C's deaths per 1k steps: "
              "game / M's hazard there / dream |"),
              "|---|---:|---:|---:|---|---:|---|---|---|---:|---:|---:|---|---|---|"]
    for r in rows:
        f, res = r["fidelity"], r["results"]
        ci = "—" if not res.get("real_ci") else "[{:.0f}, {:.0f}]".format(*res["real_ci"])
        lines.append(
            f"| {r['rung']} | {r['seed']} | {_f(f.get('death_sum_per_episode'), 2)} | "
            f"{_f(f.get('brier'), 5)} | {sharpness(f)} | {touching(f)} | "
            f"{_f(f.get('policy_survival_dream'), 0)} / "
            f"{_f(f.get('policy_survival_real'), 0)} ({_f(f.get('policy_survival_ratio'), 2)})"
            f" | {_f(f.get('open_loop_mse_10'), 3)} / {_f(f.get('copy_mse_10'), 3)} | "
            f"{_f(f.get('open_loop_mse_50'), 3)} / {_f(f.get('copy_mse_50'), 3)} | "
            f"{_f(f.get('hold_survival_ratio_max'), 2)} | {_f(res.get('dream_mean'), 0)} | "
            f"{_f(res.get('real_mean'), 1)} ± "
            f"{_f(res.get('real_std'), 1)} | {ci} | "
            f"{_f(res.get('c_death_sum_per_episode'), 2)} / "
            f"{_f(res.get('c_deaths_per_episode'), 2)} | "
            + " / ".join(_f(1e3 * res[k] if k in res else None, 2) for k in (
                "c_death_rate_game", "c_hazard_rate_game", "c_death_rate_dream")) + " |")
    lines += probe_table(rows)
    lines += ["", "## Against the issue's targets", "",
              ("| rung | seed | Σ p(done) in 0.9-1.1 | data policy's dream survival within ±20% "
              "of the game's | real >= 750 |"), "|---|---:|---|---|---|"]
    for r in rows:
        f, res = r["fidelity"], r["results"]
        death, ratio = f.get("death_sum_per_episode"), f.get("policy_survival_ratio")
        real = res.get("real_mean")
        lines.append(
            f"| {r['rung']} | {r['seed']} | {_verdict(death, 0.9 <= (death or 0) <= 1.1, 2)} | "
            f"{_verdict(ratio, 0.8 <= (ratio or 0) <= 1.2, 2)} | "
            f"{_verdict(real, (real or 0) >= 750, 1)}"
            f"{'' if real is None or real >= 750 else f', {750 - real:.0f} short'} |")
    lines += ["", "## Wall time per stage (s, 2 cores)", "",
              ("A stage shared from an earlier rung counts what it cost there. The rungs "
              "measured in session 3 (c100, m512, m_faithful, thr30, vlr) ran side by side on "
              "the 2 cores, so their stages are slower than on an idle machine; later rungs ran "
              "one at a time. The machine changed between sessions (the budgets table names it "
              "where it was recorded): on the Intel Xeon with AMX of 2026-12-03 from 12:00 "
              "every stage ran 2-6x faster than on the AMD EPYC of the runs before it. "
              "A stage killed and resumed counts its last call only; the CMA-ES "
              "column sums the generations' own times from history.json (real checks "
              "excluded), whatever the calls."), "",
              "| rung | seed | " + " | ".join(STAGES) + " | CMA-ES generations s | total min |",
              "|---|---:|" + "---:|" * (len(STAGES) + 2)]
    for r in rows:
        secs = [r["wall"].get(s) for s in STAGES]  # (rows from before a stage existed)
        total = sum(s for s in secs if isinstance(s, (int, float))) / 60
        lines.append(f"| {r['rung']} | {r['seed']} | " + " | ".join(_f(s, 0) for s in secs)
                     + f" | {r['cmaes_s']:.0f} | {total:.1f} |")
    text = "\n".join(lines) + "\n"
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rungs", nargs="*", type=Path, help="Rung delta files.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", type=Path, default=VAE)
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "ladder")
    parser.add_argument("--until", default=None, help="Stop every rung after this stage.")
    parser.add_argument("--report", action="store_true", help="Only rewrite the results.")
    parser.add_argument("--out", type=Path, default=RESULTS / "transfer_ladder.md")
    parser.add_argument("--pair", nargs=2, metavar=("RUNG", "OTHER"), default=None,
                        help="Only print RUNG against OTHER (row names of the record, e.g. "
                             "ladder_m512_shared_h30_it1_fast ladder_m512_shared_h30_it1) on "
                             "their common seeds: real means and fidelity side by side.")
    args = parser.parse_args()
    if args.pair:
        print("\n".join(pair_rows(read_json(args.out.with_suffix(".json")), *args.pair)))
        return
    runs = args.runs.resolve()
    runs.mkdir(parents=True, exist_ok=True)
    load = loadavg()
    if not args.report:
        for rung in args.rungs:
            seconds = run_rung(rung.resolve(), args.variant.resolve(), args.seed, runs,
                               args.until)
            print(f"ladder: {rung.stem} done in {seconds / 60:.1f} min")
    print(write_results(runs, args.out, f"load {load} at the start, {loadavg()} at the end"))


if __name__ == "__main__":
    main()
