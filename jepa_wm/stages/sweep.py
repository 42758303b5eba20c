"""``jepa-wm sweep SWEEP.yaml --out RUNS [--launcher local|slurm|submitit-local] [--jobs N]``:
run every missing cell of a variants x seeds grid, then write the report."""

from jsonargparse import ArgumentParser, Namespace


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("sweep_file", metavar="sweep", type=str,
                        help="Sweep YAML: experiment, variants, seeds, overrides, baseline.")
    parser.add_argument("--out", type=str, default="runs", help="Runs folder.")
    parser.add_argument("--launcher", type=str, default="local",
                        help="local (this machine), slurm (submitit job array), or "
                             "submitit-local (the SLURM code path run locally).")
    parser.add_argument("--jobs", type=int, default=1,
                        help="Cells at once: local worker processes, or the SLURM array "
                             "parallelism.")


def main(cfg: Namespace) -> None:
    from jepa_wm.sweep import sweep

    sweep(cfg.sweep_file, cfg.out, launcher=cfg.launcher, jobs=cfg.jobs)
