"""``jepa-wm run --config EXPERIMENT --config VARIANT --seed S --out RUNS``: every stage of
one variant and seed, skipping the stages already done for the same resolved config."""

from typing import Optional

from jsonargparse import ArgumentParser, Namespace


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--out", type=str, default="runs",
                        help="Runs folder; the run goes to OUT/<experiment>/<variant>/seed<k>.")
    parser.add_argument("--until", type=Optional[str], default=None,
                        help="Stop after this stage (e.g. fidelity: judge the dream before "
                             "CMA-ES is spent on it).")


def main(cfg: Namespace) -> None:
    from jepa_wm import pipeline

    files = [str(p) for p in (cfg.config or [])]
    if cfg.variant == "vae" and len(files) >= 2 and not any(_sets_variant(f) for f in files):
        # A variant file without a `variant:` key is named after the file (unless the
        # user named the variant with --variant).
        cfg.variant = pipeline.variant_name(files[-1])
    pipeline.run(cfg, cfg.out, until=cfg.until)


def _sets_variant(path: str) -> bool:
    import yaml

    with open(path) as f:
        data = yaml.safe_load(f) or {}
    return isinstance(data, dict) and "variant" in data
