"""``jepa-wm report RUNS/EXPERIMENT [--baseline vae]``: table (CSV, markdown, terminal),
plots and a W&B summary run over every variant and seed of an experiment."""

from jsonargparse import ArgumentParser, Namespace


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("experiment_dir", metavar="experiment", type=str,
                        help="Experiment folder, e.g. runs/doom_fast.")
    parser.add_argument("--baseline", type=str, default="vae",
                        help="Variant that p_improvement is measured against.")
    parser.add_argument("--gifs", type=bool, default=True,
                        help="Render one dream beside its real episode per variant.")


def main(cfg: Namespace) -> None:
    from jepa_wm.report import write_report

    write_report(cfg.experiment_dir, baseline=cfg.baseline, gifs=cfg.gifs)
