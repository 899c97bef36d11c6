"""``diffbench fid PATH_A PATH_B``: pytorch-fid's command (same inputs, network, preprocessing and FID) with the
numbers that say how far that FID can be trusted: each side's n, a 95% interval at these sizes, KID, a warning
when n is not above the feature dimension, and on request FID-infinity.

Roles: the FID is symmetric, but FID-infinity is not (it extrapolates the generated set's size with the reference
statistics fixed). PATH_A is the reference (real) set, PATH_B the generated set.

Layers, so that tests can swap the network: :func:`image_files` / :func:`read_stats` resolve an input,
:func:`extract_features` runs any ``Extractor`` over a folder exactly as pytorch-fid's ``get_activations`` does,
:func:`compare` computes every number from two :class:`Side` objects, :func:`format_report` prints them, and
:func:`run` is the command, which builds pytorch-fid's Inception with :func:`build_inception`.

This module imports torch only inside the functions that need it: ``diffbench --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from diffbench.errors import UsageError

if TYPE_CHECKING:
    from torch import Tensor

    from diffbench.metrics.fid import FIDInfinity

# pytorch-fid's InceptionV3.BLOCK_INDEX_BY_DIM keys (kept here so that building the parser imports no torch;
# tests/test_fid_cli.py checks they agree).
DIMS = (64, 192, 768, 2048)
STATS_SUFFIX = ".npz"
ROLES = {"A": "reference", "B": "generated"}

# images [B, 3, H, W] in [0, 1] -> features [B, D] or feature maps [B, D, h, w] (pooled to 1x1 by the caller)
Extractor = Callable[["Tensor"], "Tensor"]


@dataclass(frozen=True)
class Side:
    """One input: float64 moments ``mu`` ``[d]`` and ``sigma`` ``[d, d]``, the number of images ``n`` (None for
    an ``.npz`` written by pytorch-fid, which does not store it) and, for an image folder, the features
    ``[n, d]`` (float64) that the interval, KID and FID-infinity need."""

    path: Path
    mu: np.ndarray
    sigma: np.ndarray
    n: int | None
    features: np.ndarray | None = None

    @property
    def source(self) -> str:
        return "images" if self.features is not None else "statistics"


# --- inputs -----------------------------------------------------------------------------------------------


def image_extensions() -> tuple[str, ...]:
    """pytorch-fid's IMAGE_EXTENSIONS, sorted."""
    from pytorch_fid.fid_score import IMAGE_EXTENSIONS

    return tuple(sorted(IMAGE_EXTENSIONS))


def image_files(path: Path) -> list[Path]:
    """The images of folder ``path`` as pytorch-fid finds them: ``path.glob('*.<ext>')`` for each of its
    extensions (case-sensitive, no subfolders), sorted. A UsageError when there are fewer than 2."""
    extensions = image_extensions()
    files = sorted(file for ext in extensions for file in path.glob(f"*.{ext}"))
    if not files:
        raise UsageError(
            f"no images in {path}: no *.{{{','.join(extensions)}}} files directly inside it "
            "(pytorch-fid's search: case-sensitive, subfolders not searched)"
        )
    if len(files) < 2:
        raise UsageError(f"{path} holds 1 image ({files[0].name}); FID needs at least 2 per side (a covariance)")
    return files


def read_stats(path: Path, dims: int) -> Side:
    """The ``mu`` ``[dims]`` and ``sigma`` ``[dims, dims]`` of an ``.npz`` (pytorch-fid's keys), and ``n`` when
    stored (``--save-stats`` stores it); a UsageError names a missing key, a bad shape or a wrong dimension."""
    try:
        with np.load(path, allow_pickle=False) as stats:
            missing = [key for key in ("mu", "sigma") if key not in stats.files]
            if missing:
                raise UsageError(
                    f"{path} has no {' or '.join(missing)} (keys: {', '.join(stats.files) or 'none'}); "
                    "expected pytorch-fid's statistics: mu [d] and sigma [d, d]"
                )
            mu, sigma = np.asarray(stats["mu"], np.float64), np.asarray(stats["sigma"], np.float64)
            n = int(stats["n"]) if "n" in stats.files else None
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path} as an .npz of statistics: {exc}") from None
    d = mu.shape[0] if mu.ndim == 1 else -1
    if mu.ndim != 1 or sigma.shape != (d, d):
        raise UsageError(f"{path}: expected mu [d] and sigma [d, d], got {list(mu.shape)} and {list(sigma.shape)}")
    if d != dims:
        raise UsageError(f"{path} holds {d}-d statistics but --dims is {dims}; pass --dims {d} (or recompute)")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise UsageError(f"{path}: mu or sigma contains NaN or inf")
    return Side(path, mu, sigma, n)


def resolve(path: Path, dims: int) -> Side | list[Path]:
    """A path on the command line: the statistics of an ``.npz`` (pytorch-fid's rule: the name ends in .npz),
    else the image files of a folder; a UsageError for anything else."""
    if not path.exists():
        raise UsageError(f"no such file or folder: {path}")
    if path.name.endswith(STATS_SUFFIX):
        return read_stats(path, dims)
    if not path.is_dir():
        raise UsageError(f"{path} is neither a folder of images nor an {STATS_SUFFIX} of statistics (mu, sigma)")
    return image_files(path)


# --- features ---------------------------------------------------------------------------------------------


class _Images:
    """pytorch-fid's ``ImagePathDataset`` with ``ToTensor()`` (PIL open, ``.convert('RGB')``, ``[0, 1]``), item
    ``i`` as ``(path, image)``; an unreadable file gives ``(path, error text)`` instead of raising, because an
    exception raised in a DataLoader worker reaches the caller as a traceback, not as a file name."""

    def __init__(self, files: Sequence[Path]) -> None:
        import torchvision.transforms as TF
        from pytorch_fid.fid_score import ImagePathDataset

        self.images = ImagePathDataset(list(files), transforms=TF.ToTensor())

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Path, Tensor | str]:
        try:
            return self.images.files[i], self.images[i]
        except Exception as exc:  # any decoder error means a bad file; the caller reports it by name
            return self.images.files[i], f"{type(exc).__name__}: {exc}"


def _collate(items: list[tuple[Path, Tensor | str]]) -> Tensor | str:
    """A batch ``[B, 3, H, W]``, or one line naming the first unreadable file or the first size mismatch."""
    import torch

    for path, image in items:
        if isinstance(image, str):
            return f"cannot read image {path}: {image}"
    first_path, first = items[0]
    for path, image in items[1:]:
        if image.shape != first.shape:
            return (
                f"images of different sizes in one batch: {first_path} is {'x'.join(map(str, first.shape[1:]))}, "
                f"{path} {'x'.join(map(str, image.shape[1:]))} (pytorch-fid stacks each batch: one size per folder)"
            )
    return torch.stack([image for _, image in items])


def extract_features(
    files: Sequence[Path],
    extractor: Extractor,
    *,
    batch_size: int = 50,
    num_workers: int = 0,
    device: str = "cpu",
    desc: str | None = None,
) -> np.ndarray:
    """pytorch-fid's ``get_activations``: ``files`` in order, batches of ``batch_size`` (at most all), each
    ``[B, 3, H, W]`` in ``[0, 1]`` through ``extractor`` on ``device``, maps global-average-pooled to 1x1 when
    they are not already; float64 ``[n, D]``. A tqdm bar on stderr when it is a terminal. A UsageError names an
    unreadable image."""
    import torch
    from torch.nn.functional import adaptive_avg_pool2d
    from tqdm import tqdm

    loader = torch.utils.data.DataLoader(
        _Images(files),
        batch_size=min(batch_size, len(files)),
        shuffle=False,
        drop_last=False,
        num_workers=num_workers,
        collate_fn=_collate,
    )
    out = []
    for batch in tqdm(loader, desc=desc, unit="batch", disable=None):
        if isinstance(batch, str):
            raise UsageError(batch)
        with torch.no_grad():
            pred = extractor(batch.to(device))
        if pred.ndim == 4 and (pred.size(2) != 1 or pred.size(3) != 1):
            pred = adaptive_avg_pool2d(pred, output_size=(1, 1))
        out.append(pred.reshape(len(pred), -1).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pytorch-fid's ``(np.mean(act, axis=0), np.cov(act, rowvar=False))`` of features ``[n, d]``, float64."""
    return np.mean(features, axis=0), np.cov(features, rowvar=False)


def folder_side(path: Path, files: Sequence[Path], extractor: Extractor, dims: int, **kwargs) -> Side:
    """The :class:`Side` of an image folder: features of ``files`` (``kwargs`` go to :func:`extract_features`)
    and their moments."""
    features = extract_features(files, extractor, **kwargs)
    if features.shape[1] != dims:
        raise ValueError(f"the extractor gave {features.shape[1]}-d features, expected --dims {dims}")
    mu, sigma = statistics(features)
    return Side(path, mu, sigma, len(features), features)


def stats_path(out: Path) -> Path:
    """Where ``--save-stats`` writes: ``out``, with ``.npz`` appended as numpy does; a UsageError if it exists
    (pytorch-fid refuses too)."""
    out = out if out.name.endswith(STATS_SUFFIX) else out.with_name(out.name + STATS_SUFFIX)
    if out.exists():
        raise UsageError(f"{out} already exists; --save-stats writes a new file")
    return out


def save_stats(side: Side, out: Path) -> Path:
    """Write ``mu``, ``sigma`` (pytorch-fid's keys) and ``n`` to :func:`stats_path` of ``out``, atomically."""
    from diffbench.io import atomic_path

    out = stats_path(out)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        arrays = {"mu": side.mu, "sigma": side.sigma}
        np.savez_compressed(f, **arrays, **({"n": np.int64(side.n)} if side.n is not None else {}))
    return out


# --- the numbers ------------------------------------------------------------------------------------------


def small_n_warning(label: str, n: int, dims: int) -> str:
    return (
        f"{label}: FID from {n} images in {dims} dimensions: singular covariance, strongly biased; "
        "compare only at equal n, or use KID"
    )


@dataclass(frozen=True)
class FIDReport:
    """Everything ``diffbench fid`` prints. ``a`` / ``b`` summarise the sides (path, role, n, source); an
    optional number is None when its inputs were missing, with the reason in ``notes``."""

    fid: float
    dims: int
    a: dict
    b: dict
    ci: tuple[float, float] | None = None
    kid: tuple[float, float] | None = None
    infinity: FIDInfinity | None = None
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict:
        """A JSON-ready dict (non-finite floats as null)."""

        def clean(x: float | None) -> float | None:
            return float(x) if x is not None and math.isfinite(x) else None

        inf = self.infinity
        return {
            "fid": clean(self.fid),
            "dims": self.dims,
            "a": self.a,
            "b": self.b,
            "fid_ci_low": clean(self.ci[0]) if self.ci else None,
            "fid_ci_high": clean(self.ci[1]) if self.ci else None,
            "kid": clean(self.kid[0]) if self.kid else None,
            "kid_std": clean(self.kid[1]) if self.kid else None,
            "fid_infinity": None
            if inf is None
            else {
                "value": clean(inf.value),
                "ci_low": clean(inf.ci_low),
                "ci_high": clean(inf.ci_high),
                "residual": clean(inf.residual),
                "sizes": list(inf.sizes),
                "fids": [clean(v) for v in inf.fids],
            },
            "warnings": list(self.warnings),
            "notes": list(self.notes),
        }


def _summary(label: str, side: Side) -> dict:
    return {"path": str(side.path), "role": ROLES[label], "n": side.n, "source": side.source}


def compare(a: Side, b: Side, *, seed: int = 0, infinity: bool = False, draws: int = 100) -> FIDReport:
    """FID between reference ``a`` and generated ``b`` (from their moments, as pytorch-fid), the 95% interval at
    these sizes (``fid_interval``, ``draws`` half-samples; needs both sides' features), KID (features of both),
    and with ``infinity`` FID-infinity of ``b`` against ``a``'s moments (needs ``b``'s features). Each estimate
    gets its own ``torch.Generator`` seeded with ``seed``, so a number does not change when another is added."""
    import torch

    from diffbench.metrics.fid import fid_infinity, fid_interval, frechet_distance, kid

    dims = len(a.mu)
    if len(b.mu) != dims:
        raise UsageError(f"{a.path} has {dims}-d statistics, {b.path} {len(b.mu)}-d: compare like with like")
    value = frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
    sides = {"A": a, "B": b}
    warnings = [small_n_warning(k, s.n, dims) for k, s in sides.items() if s.n is not None and s.n <= dims]
    notes = [
        f"n of {k} unknown: {s.path} has no n (pytorch-fid stores only mu, sigma); FID is biased at small n"
        for k, s in sides.items()
        if s.n is None
    ]
    statistics_only = [f"{k} ({s.path})" for k, s in sides.items() if s.features is None]
    ci = kid_value = inf = None
    if statistics_only:
        hold = "holds" if len(statistics_only) == 1 else "hold"
        why = f"needs features, {' and '.join(statistics_only)} {hold} only mu and sigma: pass image folders"
        notes += [f"95% interval: {why}", f"KID: {why}"]
    else:
        fa, fb = torch.from_numpy(a.features), torch.from_numpy(b.features)
        ci = fid_interval(fb, fa, generator=torch.Generator().manual_seed(seed), draws=draws)
        kid_value = kid(fb, fa, generator=torch.Generator().manual_seed(seed))
    if infinity and b.features is None:
        notes.append(f"FID-infinity: needs the generated side's features, B ({b.path}) holds only mu and sigma")
    elif infinity:
        try:
            inf = fid_infinity(
                torch.from_numpy(b.features),
                torch.from_numpy(a.mu),
                torch.from_numpy(a.sigma),
                generator=torch.Generator().manual_seed(seed),
            )
        except ValueError as exc:  # too few generated images for the fit
            notes.append(f"FID-infinity: not computed: {exc}")
    return FIDReport(value, dims, _summary("A", a), _summary("B", b), ci, kid_value, inf, tuple(warnings), tuple(notes))


def format_report(report: FIDReport) -> str:
    """Text output; the first line is pytorch-fid's (``FID:  <value>``), so scripts that parse it still work."""

    def side(label: str, s: dict) -> str:
        n = "n unknown" if s["n"] is None else f"{s['n']} images"
        return f"{label} ({s['role']}) {n}" + (" (statistics file)" if s["source"] == "statistics" else "")

    lines = [f"FID:  {report.fid!r}", f"n: {side('A', report.a)}, {side('B', report.b)}; {report.dims} dims"]
    if report.ci:
        lines.append(f"95% interval at these n: [{report.ci[0]:.4f}, {report.ci[1]:.4f}] (half-sampling both sides)")
    if report.kid:
        lines.append(f"KID: {report.kid[0]:.6f} ± {report.kid[1]:.6f} (std over subsets)")
    if report.infinity:
        inf = report.infinity
        lines.append(
            f"FID-infinity: {inf.value:.4f} [{inf.ci_low:.4f}, {inf.ci_high:.4f}], fit residual {inf.residual:.4f} "
            f"({len(inf.sizes)} sizes of B from {inf.sizes[0]} to {inf.sizes[-1]}, A's statistics fixed)"
        )
    lines += [f"warning: {w}" for w in report.warnings]
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)


# --- the command ------------------------------------------------------------------------------------------


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_num_workers() -> int:
    """pytorch-fid's default: ``min(available cpus, 8)``."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Windows
        cpus = os.cpu_count()
    return min(cpus, 8) if cpus is not None else 0


def build_inception(dims: int, weights_path: str | Path | None = None, device: str = "cpu") -> Extractor:
    """pytorch-fid's ``InceptionV3([BLOCK_INDEX_BY_DIM[dims]])`` (resize to 299 bilinear and ``[0, 1]`` ->
    ``[-1, 1]`` inside) with the weights of ``find_weights``; never downloads (``FIDWeightsUnavailable``).
    Returns ``images -> model(images)[0]``: that block's feature maps."""
    from diffbench.inception import load_fid_inception

    net = load_fid_inception(weights_path, dims)
    net = net.to(device)
    return lambda images: net(images)[0]


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    return parse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "FID between two image folders or .npz statistics, as `python -m pytorch_fid PATH_A PATH_B` computes it "
        "(same network, preprocessing and statistics), plus each side's n, a 95% interval at these n, KID and "
        "a warning when n <= dims. PATH_A is the reference (real) set, PATH_B the generated set: FID and KID "
        "are symmetric, FID-infinity extrapolates PATH_B's size. Exit code 2 on bad input."
    )
    parser.add_argument("path_a", type=Path, metavar="PATH_A", help="reference: image folder or .npz (mu, sigma)")
    parser.add_argument(
        "path_b", type=Path, metavar="PATH_B", help="generated: image folder or .npz; with --save-stats the output"
    )
    parser.add_argument("--dims", type=int, default=2048, choices=DIMS, help="Inception features (default 2048)")
    parser.add_argument("--batch-size", type=_int_at_least(1), default=50, help="images per batch (default 50)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--num-workers", type=_int_at_least(0), default=None, help="image loading processes (default min(cpus, 8))"
    )
    parser.add_argument(
        "--save-stats",
        action="store_true",
        help="write PATH_A's mu, sigma (pytorch-fid's keys) and n to PATH_B (.npz); PATH_B must not exist",
    )
    parser.add_argument(
        "--fid-weights",
        default=None,
        metavar="PATH",
        help="pytorch-fid's Inception weight file (default: the torch hub path pytorch-fid reads; never downloaded)",
    )
    parser.add_argument(
        "--infinity", action="store_true", help="also FID-infinity of PATH_B (needs its images), with CI and residual"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the interval, KID and FID-infinity draws")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def run(args: argparse.Namespace) -> int:
    """The command: resolve both inputs (every bad-input check before any image is read), build the network only
    when a side is a folder, then save statistics or print the report."""
    from diffbench.inception import FIDWeightsUnavailable

    inputs = {"A": resolve(args.path_a, args.dims)}
    if args.save_stats:
        stats_path(args.path_b)  # refuse an existing output before reading any image
    else:
        inputs["B"] = resolve(args.path_b, args.dims)
    device = args.device or default_device()
    extractor = None
    if any(isinstance(value, list) for value in inputs.values()):
        try:
            extractor = build_inception(args.dims, args.fid_weights, device)
        except FIDWeightsUnavailable as exc:
            raise UsageError(str(exc)) from None
    workers = default_num_workers() if args.num_workers is None else args.num_workers
    sides = {}
    for label, value in inputs.items():
        path = args.path_a if label == "A" else args.path_b
        if isinstance(value, Side):
            sides[label] = value
            continue
        desc = f"{label} ({ROLES[label]}) {path.name}"
        options = {"batch_size": args.batch_size, "num_workers": workers, "device": device, "desc": desc}
        sides[label] = folder_side(path, value, extractor, args.dims, **options)
    if args.save_stats:
        a = sides["A"]
        written = save_stats(a, args.path_b)
        if args.json:
            print(json.dumps({"saved": str(written), "n": a.n, "dims": args.dims}))
        else:
            print(f"saved {written}: mu, sigma, n of {a.n if a.n is not None else 'unknown'} images, {args.dims} dims")
            if a.n is not None and a.n <= args.dims:
                print(f"warning: {small_n_warning('A', a.n, args.dims)}")
        return 0
    report = compare(sides["A"], sides["B"], seed=args.seed, infinity=args.infinity)
    print(json.dumps(report.to_json(), indent=1) if args.json else format_report(report))
    return 0


__all__ = [
    "DIMS",
    "Extractor",
    "FIDReport",
    "Side",
    "build_inception",
    "compare",
    "configure",
    "extract_features",
    "folder_side",
    "format_report",
    "image_files",
    "read_stats",
    "resolve",
    "run",
    "save_stats",
    "statistics",
    "stats_path",
]
