"""``python -m twostream_lib train``: train one stream or one fusion row from the command line.

It runs the same code as the notebooks (:func:`~.streams.train_stream`, :func:`~.fusion.run_fusion`) on
a profile with overrides, so a model trained here is the one a notebook would train, found in the same
run folder (and reused by the notebooks afterwards)::

    python -m twostream_lib train --profile demo --stream temporal
    python -m twostream_lib train --profile demo --row table1:conv@relu5 --seed 1
    python -m twostream_lib train --profile paper -p epochs_fusion 5 --fusion conv --layers relu3 relu5
    python -m twostream_lib train --config experiment.json

An experiment file holds the same choices as JSON: ``{"profile": "demo", "settings": {profile field:
value}, "stream": "spatial" | "row": "table2:conv@relu3" | "fusion": {Variant field: value}, "backbone":
"shallow", "split": 1, "seed": 0}``; unknown keys are refused. The result (accuracy with its standard
error and 95% Wilson interval over the test videos) is printed and written as ``eval.json`` beside the
model. Errors print ``error: ...`` and exit with status 2 (``--debug`` shows the traceback).
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from twostream_lib.config import PROFILES
from twostream_lib.errors import ConfigError, DataError
from twostream_lib.evaluate import accuracy, binomial_ci, standard_error
from twostream_lib.files import atomic_write_json

from .data import prepare_data, setup
from .fusion import Variant, fusion_dir, run_fusion
from .registry import TABLES
from .streams import stream_dir, stream_scores, train_streams

__all__ = ["cli_main", "EXPERIMENT_KEYS"]

#: The keys an experiment file may hold.
EXPERIMENT_KEYS = ("profile", "settings", "stream", "backbone", "row", "fusion", "split", "seed")
_VARIANT_FIELDS = tuple(f.name for f in dataclasses.fields(Variant) if f.name not in ("key", "label"))


def _parse_value(text: str):
    """A ``-p NAME VALUE`` value: a Python literal if it is one, else the text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _read_experiment(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        exp = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"--config {path}: not valid JSON ({e})") from e
    if not isinstance(exp, dict):
        raise ConfigError(f"--config {path}: expected a JSON object with keys from {list(EXPERIMENT_KEYS)}")
    unknown = sorted(set(exp) - set(EXPERIMENT_KEYS))
    if unknown:
        raise ConfigError(f"--config {path}: unknown key(s) {unknown}; expected some of {list(EXPERIMENT_KEYS)}")
    return exp


def _variant(exp: dict) -> Variant:
    """The fusion row an experiment names (``row``) or describes (``fusion``)."""
    if "row" in exp:
        table, _, key = str(exp["row"]).partition(":")
        spec = TABLES.get(table)
        rows = {v.key: v for v in spec.variants} if spec else {}
        if key not in rows:
            known = sorted(f"{n}:{v.key}" for n, s in TABLES.items() for v in s.variants)
            raise ConfigError(f"row {exp['row']!r} is not a fusion row of a table; expected one of {known}")
        return rows[key]
    fusion = dict(exp["fusion"])
    unknown = sorted(set(fusion) - set(_VARIANT_FIELDS))
    if unknown:
        raise ConfigError(f"fusion: unknown key(s) {unknown}; expected some of {list(_VARIANT_FIELDS)}")
    for name in ("layers",):
        if name in fusion:
            fusion[name] = tuple(fusion[name])
    return Variant("custom", "custom fusion", **fusion)


def run(exp: dict) -> dict:
    """Train (or load) what ``exp`` describes and evaluate it on the test videos; returns the summary."""
    chosen = [k for k in ("stream", "row", "fusion") if k in exp]
    if len(chosen) != 1:
        raise ConfigError(f"give exactly one of stream, row or fusion; got {chosen or 'none'}")
    cfg = setup(exp.get("profile", "demo"), **exp.get("settings", {}))
    data = prepare_data(cfg)
    split = int(exp.get("split", cfg.split))
    seed = int(exp.get("seed", cfg.seeds[0]))
    if "stream" in exp:
        stream = exp["stream"]
        if stream not in ("spatial", "temporal"):
            raise ConfigError(f"stream must be 'spatial' or 'temporal', got {stream!r}")
        backbone = {"shallow": cfg.backbone, "deep": cfg.deep_backbone}.get(exp.get("backbone", "shallow"))
        if backbone is None:
            raise ConfigError(f"backbone must be 'shallow' or 'deep', got {exp['backbone']!r}")
        streams = train_streams(cfg, data, backbone=backbone, split=split, seed=seed, only=stream)
        scores, out = stream_scores(cfg, data, streams, stream), stream_dir(cfg, backbone, stream, split, seed)
    else:
        variant = _variant(exp)
        scores, _ = run_fusion(cfg, data, variant, split=split, seed=seed)
        out = fusion_dir(cfg, variant, split, seed)
    acc, n = accuracy(scores), len(scores.videos)
    lo, hi = binomial_ci(acc, n)
    summary = {"accuracy": acc, "videos": n, "standard_error": standard_error(acc, n), "ci95": [lo, hi],
               "profile": cfg.name, "split": split, "seed": seed, "out_dir": str(out)}
    atomic_write_json(out / "eval.json", summary)
    return summary


def cli_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m twostream_lib train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--config", type=Path, help="experiment JSON file (flags override it)")
    p.add_argument("--profile", choices=sorted(PROFILES))
    p.add_argument("-p", "--set", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="profile setting, e.g. -p epochs_fusion 5")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--stream", choices=("spatial", "temporal"))
    what.add_argument("--row", help="a fusion row of a table, e.g. table1:conv@relu5")
    what.add_argument("--fusion", help="a fusion method, with --layers etc. (see Variant)")
    p.add_argument("--backbone", choices=("shallow", "deep"), help="the stream's backbone (default shallow)")
    p.add_argument("--layers", nargs="+", help="fusion layers, e.g. relu5 fc8")
    p.add_argument("--temporal", help="temporal fusion: none | pool2d | pool3d | conv3d_pool3d")
    p.add_argument("--split", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = p.parse_args(list(argv)[1:])
    try:
        exp = _read_experiment(args.config) if args.config else {}
        if args.profile:
            exp["profile"] = args.profile
        exp["settings"] = {**exp.get("settings", {}), **{k: _parse_value(v) for k, v in args.set}}
        for key in ("stream", "row", "backbone", "split", "seed"):
            if getattr(args, key) is not None:
                exp[key] = getattr(args, key)
        if args.fusion:
            exp["fusion"] = {"fusion": args.fusion}
        for key in ("layers", "temporal"):
            if getattr(args, key) is not None:
                exp.setdefault("fusion", {})[key] = getattr(args, key)
        summary = run(exp)
    except (ConfigError, DataError, OSError) as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"video accuracy {summary['accuracy']:.4f} on {summary['videos']} videos "
          f"(95% CI {summary['ci95'][0]:.4f}-{summary['ci95'][1]:.4f}); {summary['out_dir']}")
    return 0
