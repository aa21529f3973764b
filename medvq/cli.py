"""The ``medvq`` command (also ``python -m medvq``): a trained tokenizer and generator used from the shell.

Verbs (``medvq <verb> --help`` explains each):

- ``tokenize IN OUT --model RUN``: a folder of images or a MONAI datalist JSON -> ``<name>_tokens.npy`` per image,
  ``tokens.json`` and ``index.csv`` (the bundle inference's files, by the same :class:`medvq.inference.TokenSaver`);
- ``reconstruct IN OUT --model RUN``: the same plus each reconstruction (2D: PNG; 3D: NIfTI on the source grid, in
  input units);
- ``sample OUT --model RUN --conditions "G,D+H" -n 100``: synthetic images with provenance sidecars
  (:func:`medvq.generation.write_samples`) and the memorization check against the training images
  (:func:`medvq.generation.check_sample_memorization`: ``memorization.json``, ``memorization_pairs.png``);
- ``report RUN [RUN ...]``: the side-by-side comparison of evaluated runs (:func:`medvq.report.compare_runs`);
- ``export RUN``: TorchScript by trace, checked for identical token indices on the validation images;
- ``info RUN``: what a run or checkpoint holds (preset, sizes, schedule, switch, coverage at the end);
- ``knobs BUNDLE``: every setting of a bundle with its default and meaning (what ``--help`` on
  ``python -m monai.bundle run`` cannot show: MONAI's runner starts the run instead).

Errors a user can fix (a missing file, a bad argument, an output folder that already holds results) end the command
with exit status 2 and one message naming the file or argument; nothing finished is ever overwritten.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]

_PHOTO_MODALITIES = ("fundus", "natural")


class UsageError(ValueError):
    """A problem with the command line the user can fix (printed without a traceback)."""


# ------------------------------------------------------------------------------------------------------ helpers
def _fresh_output(path: str | Path, marker: str) -> Path:
    """``path`` as a new or empty folder; a folder already holding results (``marker``) or anything else is refused."""
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"the output '{out}' is a file; give a new folder.")
    if out.is_dir() and any(out.iterdir()):
        what = "finished results" if (out / marker).exists() else "files"
        raise UsageError(f"the output folder '{out}' already holds {what}; medvq never writes over them: give a new "
                         "folder (or remove that one yourself).")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _input_items(source: str, tokenizer: Any, key: str, slice_axis: int) -> list[dict[str, Any]]:
    """Datalist items of a folder or a datalist JSON, listed the way the tokenizer's training listed its data."""
    from medvq.inference import inference_datalist

    path = Path(source).expanduser()
    if not path.exists():
        raise UsageError(f"the input '{path}' does not exist: give a folder of images or a MONAI datalist JSON.")
    photos = tokenizer.modality in _PHOTO_MODALITIES
    if path.is_file():
        if path.suffix.lower() != ".json":
            raise UsageError(f"the input '{path}' is a file but not a datalist JSON: give its folder instead.")
        return inference_datalist(input_datalist=path, key=key)
    return inference_datalist(input_dir=path, data_format="odir" if photos else "images",
                              spatial_dims=tokenizer.spatial_dims, slice_axis=slice_axis,
                              channels=int(tokenizer.settings["channels"]))


def _run_tokenizer(args: argparse.Namespace, reconstructions: bool) -> int:
    from monai.data import DataLoader, Dataset
    from tqdm.auto import tqdm

    from medvq.api import load_tokenizer
    from medvq.engines import TokenizerEvaluator
    from medvq.inference import TokenSaver

    tokenizer = load_tokenizer(args.model, device=args.device)
    items = _input_items(args.input, tokenizer, args.key, args.slice_axis)
    out = _fresh_output(args.output, "tokens.json")
    modality = tokenizer.modality
    saver = TokenSaver(
        out, metadata={"model": str(tokenizer.checkpoint), "settings": tokenizer.settings, "source": str(args.input)},
        transform=tokenizer.pipeline if tokenizer.spatial_dims == 3 else None,
        modality=None if tokenizer.spatial_dims == 2 else modality,  # as inference.json: 2D PNGs stay in [-1, 1]
        window=None if tokenizer.spatial_dims == 2 else tokenizer.window,
        reconstructions=reconstructions,
    )
    loader = DataLoader(Dataset(items, tokenizer.pipeline), batch_size=args.batch_size, shuffle=False,
                        num_workers=args.num_workers)
    evaluator = TokenizerEvaluator(tokenizer.device, loader, tokenizer.network, val_handlers=[saver])
    bar = tqdm(total=len(loader), desc=args.verb, disable=args.quiet, leave=False)
    from ignite.engine import Events

    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda _: bar.update(1))
    evaluator.run()
    bar.close()
    psnr = [r["psnr"] for r in saver.records if r["psnr"] is not None and r["psnr"] != float("inf")]
    mean = f"{sum(psnr) / len(psnr):.2f} dB" if psnr else "n/a"
    what = "token maps and reconstructions" if reconstructions else "token maps"
    print(f"wrote {len(saver.records)} {what} of {len(items)} inputs to {out} (index.csv, tokens.json; "
          f"mean PSNR {mean})")
    return 0


def _conditions(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise UsageError(f"--conditions {text!r} names no condition: e.g. 'G' or 'G,D+H' or 'null'.")
    return names


# --------------------------------------------------------------------------------------------------------- verbs
def _tokenize(args: argparse.Namespace) -> int:
    return _run_tokenizer(args, reconstructions=False)


def _reconstruct(args: argparse.Namespace) -> int:
    return _run_tokenizer(args, reconstructions=True)


def _sample(args: argparse.Namespace) -> int:
    from medvq.api import load_generator
    from medvq.generation import write_samples

    generator = load_generator(args.model, device=args.device)
    tok = generator.tokenizer
    conditions = _conditions(args.conditions) if args.conditions else list(generator.condition_names)
    out = _fresh_output(args.output, "samples.json")
    records = write_samples(
        generator.network, tok.network, conditions, generator.condition_names, out, num_per_condition=args.num,
        batch_size=args.batch_size, seed=args.seed, guidance=args.guidance, guidance_ramp=args.guidance_ramp,
        top_k=args.top_k, top_p=args.top_p, temperature=args.temperature,
        checkpoints={"tokenizer": str(tok.checkpoint), "generator": str(generator.checkpoint)},
        training_data={"datalist": str(generator.training_data)} if generator.training_data else None,
        progress=not args.quiet, spacing=tok.settings.get("spacing"),
        modality=None if tok.modality in _PHOTO_MODALITIES else tok.modality,
        window=None if tok.modality in _PHOTO_MODALITIES else tok.window,
    )
    print(f"wrote {len(records)} synthetic images for {len(conditions)} conditions to {out} (samples.json, "
          "grid.png, one .json provenance sidecar per image)")
    if args.no_memorization_check:
        print("memorization check skipped (--no_memorization_check)")
        return 0
    if generator.training_data is None:
        print("memorization check skipped: the run has no datalist.json naming its training images; run "
              "medvq.generation.check_sample_memorization with the datalist the models were trained on",
              file=sys.stderr)
        return 0
    from medvq.generation import check_sample_memorization

    report = check_sample_memorization(tok, records, generator.training_data, out, batch_size=args.batch_size,
                                       progress=not args.quiet)
    spaces = "; ".join(f"{space}: {r.fraction_flagged:.1%} flagged (threshold {r.threshold:.4g} RMS, calibration "
                       f"{r.calibration.status})" for space, r in report.spaces.items())
    print(f"memorization check: {sum(report.flagged)} of {report.num_samples} samples are near-copies of one of the "
          f"{report.num_train} training images ({spaces}); memorization.json, memorization_pairs.png")
    return 0


def _report(args: argparse.Namespace) -> int:
    from medvq.report import compare_runs

    result = compare_runs(args.runs, args.output)
    print(json.dumps({"runs": result["runs"]}, indent=2, default=str) if args.json else result["table"])
    for path in result["plots"]:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _export(args: argparse.Namespace) -> int:
    from medvq.export import export_tokenizer

    report = export_tokenizer(args.run, output=args.output, check_images=args.check_images or None,
                              device=args.device, overwrite=args.overwrite)
    print(f"wrote {report.output} (sha256 {report.sha256[:12]}, input {list(report.input_shape)}, tokens "
          f"{list(report.token_shape)}): identical token indices to eager on {report.images_checked} images "
          f"({report.tokens_compared} tokens, {report.mismatches} mismatches) in {report.seconds:.1f} s")
    if report.trace_warnings:
        print(f"{len(report.trace_warnings)} trace warnings (values fixed at the traced input shape; the check "
              "above passed): " + "; ".join(w.splitlines()[0][:160] for w in report.trace_warnings), file=sys.stderr)
    return 0


def _info(args: argparse.Namespace) -> int:
    from medvq.report.run_summary import run_summary

    summary = run_summary(args.run)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0

    def show(value: Any, indent: int) -> None:
        for key, item in value.items():
            if isinstance(item, dict):
                print(" " * indent + f"{key}:")
                show(item, indent + 2)
            else:
                print(" " * indent + f"{key}: {item:.6g}" if isinstance(item, float) else " " * indent + f"{key}: {item}")

    show(summary, 0)
    return 0


def _knobs(args: argparse.Namespace) -> int:
    from medvq.utils.knobs import bundle_knobs, format_knobs

    knobs = bundle_knobs(args.bundle, args.config)
    print(json.dumps(knobs, indent=2) if args.json else format_knobs(knobs, markdown=args.markdown))
    return 0


# -------------------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The ``medvq`` argument parser (one sub-parser per verb, each with its own ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="medvq", description="Tokenize, reconstruct and sample medical images with trained medvq models "
        "(deferred-quantization VQGAN / multi-scale tokenizers and VAR generators).",
        epilog="Training runs through MONAI bundles: python -m monai.bundle run training --config_file "
        "bundles/odir_vq/configs/train.json (medvq knobs bundles/odir_vq lists its settings).")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    def verb(name: str, help_: str, func: Any) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_, description=help_)
        sub.set_defaults(func=func)
        return sub

    def device(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ...; default CUDA when available")
        sub.add_argument("--quiet", action="store_true", help="no progress bar")

    for name, func, text in (
        ("tokenize", _tokenize, "Token maps of every image of a folder or datalist, with an index CSV."),
        ("reconstruct", _reconstruct, "Token maps and reconstructions of every image of a folder or datalist."),
    ):
        sub = verb(name, text, func)
        sub.add_argument("input", help="a folder of images (PNG, JPEG, DICOM files or series folders, NIfTI; "
                         "sub-folders included) or a MONAI datalist JSON (e.g. a run's datalist.json)")
        sub.add_argument("output", help="a new (or empty) folder for <name>_tokens.npy, tokens.json, index.csv")
        sub.add_argument("--model", required=True, help="the trained tokenizer: a run folder, a bundle folder "
                         "(models/model.pt) or a checkpoint with its run_info.json")
        sub.add_argument("--key", default="validation", help="the list of a datalist JSON to read (default "
                         "validation)")
        sub.add_argument("--slice_axis", type=int, default=2, help="2D tokenizers on volumes: the RAS axis to slice "
                         "along, as at training (default 2, axial)")
        sub.add_argument("--batch_size", type=int, default=8, help="images per batch (default 8)")
        sub.add_argument("--num_workers", type=int, default=0, help="DataLoader worker processes (default 0)")
        device(sub)

    sub = verb("sample", "Synthetic images per condition with provenance sidecars (never for diagnosis).", _sample)
    sub.add_argument("output", help="a new (or empty) folder for the images, their sidecars, samples.json, grid.png")
    sub.add_argument("--model", required=True, help="the trained generator: an odir_var / image_var run folder, its "
                     "generator/ folder, a bundle folder (models/generator.pt) or a generator checkpoint")
    sub.add_argument("--conditions", default="", help="comma-separated conditions: a class ('G'), classes joined "
                     "by '+' ('D+H'), or 'null' (unconditional); default every class alone")
    sub.add_argument("-n", "--num", type=int, default=8, help="images per condition (default 8)")
    sub.add_argument("--seed", type=int, default=0, help="base seed (default 0); batch b of condition c is drawn "
                     "with medvq.generation.batch_seed(seed, c, b), recorded in its sidecar")
    sub.add_argument("--guidance", type=float, default=2.5, help="classifier-free guidance (default 2.5 = VAR's "
                     "cfg 1.5)")
    sub.add_argument("--guidance_ramp", choices=("linear", "constant"), default="linear",
                     help="guidance over the scales (default linear, as VAR)")
    sub.add_argument("--top_k", type=int, default=900, help="top-k filtering (default 900; 0 off)")
    sub.add_argument("--top_p", type=float, default=0.96, help="nucleus filtering (default 0.96; 1 off)")
    sub.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (default 1)")
    sub.add_argument("--batch_size", type=int, default=16, help="images drawn together (default 16)")
    sub.add_argument("--no_memorization_check", action="store_true", help="skip the check of every sample against "
                     "the training images (nearest training image in pixel and latent space, near-copies flagged; "
                     "docs/memorization.md)")
    device(sub)

    sub = verb("report", "Side-by-side table and plots of evaluated runs (each with eval/metrics.json).", _report)
    sub.add_argument("runs", nargs="+", help="run folders evaluated by the bundle's evaluate.json")
    sub.add_argument("--output", default="comparison", help="where compare.md, compare.json and plots go")
    sub.add_argument("--json", action="store_true", help="print JSON instead of the markdown table")

    sub = verb("export", "TorchScript (trace) of a trained tokenizer, checked against eager on its validation "
               "images.", _export)
    sub.add_argument("run", help="a tokenizer run folder, bundle folder or checkpoint")
    sub.add_argument("--output", default=None, help="the .ts file (default model.ts in the run / bundle models/)")
    sub.add_argument("--check_images", nargs="+", default=None, help="images to compare exported and eager tokens "
                     "on (default the run's validation images; a bundle folder has none: then required)")
    sub.add_argument("--overwrite", action="store_true", help="replace an existing export")
    sub.add_argument("--device", default="cpu", help="where to trace and check (default cpu)")

    sub = verb("info", "What a run or checkpoint holds: preset, sizes, schedule, switch, coverage at the end.", _info)
    sub.add_argument("run", help="a run folder, bundle folder or checkpoint")
    sub.add_argument("--json", action="store_true", help="print JSON")

    sub = verb("knobs", "Every setting of a bundle: default and meaning (the bundle's --help).", _knobs)
    sub.add_argument("bundle", help="a bundle folder (bundles/odir_vq) or a config file")
    sub.add_argument("--config", default=None, help="the config of the bundle to list (default train.json, or "
                     "train_tokenizer.json + train.json for two-stage bundles); a file name in configs/")
    sub.add_argument("--markdown", action="store_true", help="a markdown table (for a README)")
    sub.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``medvq`` command; returns the exit status (0 done, 2 a usage error with its message)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    for name in ("batch_size", "num"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}.")
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, FileExistsError, ValueError) as error:  # a fixable problem: its message, no traceback
        print(f"medvq {args.verb}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
