"""``diffbench fid``: pytorch-fid's inputs, preprocessing, activations and FID on tiny PNG folders, with a small
deterministic network in place of Inception (no weights needed); the extra numbers; one-line errors, exit 2."""

from __future__ import annotations

import json
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import torchvision.transforms as TF
from PIL import Image
from pytorch_fid.fid_score import IMAGE_EXTENSIONS, ImagePathDataset, get_activations
from pytorch_fid.inception import InceptionV3
from torch import nn

from diffbench import fid_cli
from diffbench.cli import COMMANDS, main

DIMS = 64  # the smallest of pytorch-fid's --dims choices


class FakeInception(nn.Module):
    """Stands in for ``InceptionV3([block])``: images ``[B, 3, H, W]`` in ``[0, 1]`` -> a list holding one feature
    map ``[B, dims, 2, 2]`` (tanh of a fixed random projection of the image pooled to 8x8), so the caller's
    spatial pooling is exercised and the features have a full-rank covariance once n > dims."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.dims = dims
        self.weight = torch.randn(dims * 4, 3 * 8 * 8, generator=torch.Generator().manual_seed(dims)) / 8

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        pooled = nn.functional.adaptive_avg_pool2d(x, 8).flatten(1)
        return [torch.tanh(pooled @ self.weight.T).reshape(len(x), self.dims, 2, 2)]


@pytest.fixture
def fake_inception(monkeypatch) -> list[tuple]:
    """Replace the Inception builder; returns the list of its calls ``(dims, weights_path, device)``."""
    calls = []

    def build(dims, weights_path=None, device="cpu"):
        calls.append((dims, weights_path, device))
        net = FakeInception(dims)
        return lambda images: net(images)[0]

    monkeypatch.setattr(fid_cli, "build_inception", build)
    return calls


def write_images(folder: Path, n: int, seed: int, *, size: int = 8, low: int = 0, mode: str = "RGB") -> Path:
    """``n`` random ``size`` x ``size`` PNGs with pixels uniform in ``[low, 255]``, saved in ``mode``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        pixels = rng.integers(low, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).convert(mode).save(folder / f"{i:04d}.png")
    return folder


def reference_features(files: list[Path], dims: int) -> np.ndarray:
    """The fake network on each image, read independently of both implementations: PIL -> RGB -> [0, 1]."""
    net = FakeInception(dims)
    rows = []
    for file in files:
        pixels = np.asarray(Image.open(file).convert("RGB"), dtype=np.float32) / 255
        x = torch.from_numpy(pixels).permute(2, 0, 1)[None]
        rows.append(net(x)[0].mean(dim=(2, 3))[0].numpy())
    return np.array(rows, dtype=np.float64)


def reference_frechet(mu1, sigma1, mu2, sigma2) -> float:
    """``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2))`` with SciPy's sqrtm (no ``disp``: removed in SciPy 1.18)."""
    covmean = np.real(scipy.linalg.sqrtm(sigma1 @ sigma2))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def reference_fid(folder_a: Path, folder_b: Path, dims: int = DIMS) -> float:
    moments = []
    for folder in (folder_a, folder_b):
        feats = reference_features(sorted(folder.glob("*.png")), dims)
        moments += [feats.mean(axis=0), np.cov(feats, rowvar=False)]
    return reference_frechet(*moments)


def fid_json(capsys, *args: str) -> dict:
    assert main(["fid", *args, "--dims", str(DIMS), "--num-workers", "0", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path]:
    """Reference A (80 images) and generated B (90, brighter): n > dims on both sides."""
    return write_images(tmp_path / "real", 80, seed=0), write_images(tmp_path / "gen", 90, seed=1, low=40)


# --- agreement with pytorch-fid ---------------------------------------------------------------------------


def test_fid_is_registered_and_its_constants_are_pytorch_fid_s():
    assert "fid" in COMMANDS
    assert tuple(InceptionV3.BLOCK_INDEX_BY_DIM) == fid_cli.DIMS
    assert set(fid_cli.image_extensions()) == IMAGE_EXTENSIONS


def test_image_files_are_found_as_pytorch_fid_finds_them(tmp_path):
    folder = write_images(tmp_path / "imgs", 3, seed=0)
    Image.new("RGB", (8, 8)).save(folder / "b.jpg")
    Image.new("RGB", (8, 8)).save(folder / "c.PNG")  # pytorch-fid's glob is case-sensitive: not an image to it
    write_images(folder / "sub", 2, seed=1)  # nor are subfolders searched
    (folder / "notes.txt").write_text("x")
    theirs = sorted(file for ext in IMAGE_EXTENSIONS for file in folder.glob(f"*.{ext}"))
    assert fid_cli.image_files(folder) == theirs
    assert [f.name for f in theirs] == ["0000.png", "0001.png", "0002.png", "b.jpg"]


def test_preprocessing_equals_pytorch_fid_s(tmp_path):
    """Grey, palette, RGBA, RGB and JPEG files become the same [3, H, W] tensors in [0, 1] as in pytorch-fid."""
    folder = tmp_path / "mixed"
    for mode in ("L", "P", "RGBA", "RGB"):
        write_images(folder / mode, 1, seed=len(mode), mode=mode)
        (folder / mode / "0000.png").rename(folder / f"{mode}.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / "x.jpg")
    files = fid_cli.image_files(folder)
    ours = fid_cli._Images(files)
    theirs = ImagePathDataset(files, transforms=TF.ToTensor())
    for i, file in enumerate(files):
        path, image = ours[i]
        assert path == file and image.shape == (3, 8, 8) and image.dtype == torch.float32
        assert torch.equal(image, theirs[i])
        pixels = np.asarray(Image.open(file).convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255
        assert np.allclose(image.numpy(), pixels, atol=1e-7)


def test_features_are_pytorch_fid_s_activations(tmp_path):
    """Batches that do not divide n, a batch larger than n, spatial maps pooled to 1x1: get_activations' rows."""
    files = fid_cli.image_files(write_images(tmp_path / "imgs", 20, seed=0))
    net = FakeInception(DIMS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = get_activations(files, net, batch_size=7, dims=DIMS, num_workers=0)
    for batch_size in (7, 50):
        ours = fid_cli.extract_features(files, lambda x: net(x)[0], batch_size=batch_size)
        assert ours.dtype == np.float64 and ours.shape == (20, DIMS)
        assert np.array_equal(ours, theirs)
    assert np.allclose(theirs, reference_features(files, DIMS), atol=1e-6)
    mu, sigma = fid_cli.statistics(theirs)
    assert np.allclose(sigma, np.cov(theirs.T)) and np.allclose(mu, theirs.mean(axis=0))


def test_fid_of_two_folders_matches_a_float64_reference(folders, fake_inception, capsys):
    a, b = folders
    result = fid_json(capsys, str(a), str(b))
    expected = reference_fid(a, b)
    assert result["fid"] == pytest.approx(expected, rel=1e-6)  # float32 features: batched vs one by one
    assert result["dims"] == DIMS and fake_inception == [(DIMS, None, "cpu")]  # one network for both sides
    assert result["a"] == {"path": str(a), "role": "reference", "n": 80, "source": "images"}
    assert result["b"] == {"path": str(b), "role": "generated", "n": 90, "source": "images"}
    assert result["warnings"] == [] and result["fid_infinity"] is None
    # the interval at these sizes holds the estimate; KID sees the brightness shift
    assert 0 <= result["fid_ci_low"] < result["fid"] < result["fid_ci_high"]
    assert result["kid"] > 3 * result["kid_std"] > 0
    # the text output starts with pytorch-fid's line
    assert main(["fid", str(a), str(b), "--dims", str(DIMS), "--num-workers", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("FID:  ") and float(lines[0].split()[-1]) == result["fid"]
    assert any(line.startswith("95% interval at these n: [") for line in lines)
    assert any(line.startswith("KID: ") and " ± " in line for line in lines)


def test_fid_matches_pytorch_fid_s_calculate_frechet_distance(folders, fake_inception, capsys):
    from pytorch_fid.fid_score import calculate_frechet_distance

    a, b = folders
    moments = []
    for folder in folders:
        feats = reference_features(fid_cli.image_files(folder), DIMS)
        moments += [feats.mean(axis=0), np.cov(feats, rowvar=False)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SciPy 1.17's deprecation of sqrtm's `disp`
            theirs = float(calculate_frechet_distance(*moments))
    except TypeError as exc:  # SciPy >= 1.18 removed `disp`, which pytorch-fid 0.3.0 passes
        pytest.skip(f"pytorch-fid's calculate_frechet_distance is broken on SciPy {scipy.__version__}: {exc}")
    assert fid_json(capsys, str(a), str(b))["fid"] == pytest.approx(theirs, rel=1e-6)


def test_saved_statistics_give_the_folder_s_fid(folders, fake_inception, capsys, tmp_path):
    a, b = folders
    folder_fid = fid_json(capsys, str(a), str(b))["fid"]
    assert main(["fid", str(a), str(tmp_path / "real"), "--save-stats", "--dims", str(DIMS), "--num-workers", "0"]) == 0
    assert "real.npz" in capsys.readouterr().out  # numpy's rule: .npz appended
    with np.load(tmp_path / "real.npz") as stats:
        assert sorted(stats.files) == ["mu", "n", "sigma"] and int(stats["n"]) == 80
        assert stats["mu"].shape == (DIMS,) and stats["sigma"].shape == (DIMS, DIMS)
    result = fid_json(capsys, str(tmp_path / "real.npz"), str(b))
    assert result["fid"] == pytest.approx(folder_fid, rel=1e-12)
    assert result["a"]["source"] == "statistics" and result["a"]["n"] == 80
    assert result["fid_ci_low"] is None and result["kid"] is None
    assert any(note.startswith("95% interval: needs features") for note in result["notes"])
    # statistics on both sides need no network at all
    fake_inception.clear()
    assert main(["fid", str(b), str(tmp_path / "gen.npz"), "--save-stats", "--dims", str(DIMS), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 90
    fake_inception.clear()
    assert fid_json(capsys, str(tmp_path / "real.npz"), str(tmp_path / "gen.npz"))["fid"] == pytest.approx(folder_fid)
    assert fake_inception == []


def test_pytorch_fid_statistics_without_n_are_read_with_a_note(folders, fake_inception, capsys, tmp_path):
    a, b = folders
    feats = reference_features(fid_cli.image_files(a), DIMS)
    np.savez_compressed(tmp_path / "theirs.npz", mu=feats.mean(axis=0), sigma=np.cov(feats, rowvar=False))
    result = fid_json(capsys, str(tmp_path / "theirs.npz"), str(b))
    assert result["a"]["n"] is None and any(note.startswith("n of A unknown") for note in result["notes"])
    assert result["fid"] == pytest.approx(reference_fid(a, b), rel=1e-6)


# --- the honest extras ------------------------------------------------------------------------------------


def test_small_n_warns_per_side(tmp_path, fake_inception, capsys):
    a, b = write_images(tmp_path / "a", 10, seed=0), write_images(tmp_path / "b", 70, seed=1)
    result = fid_json(capsys, str(a), str(b))
    assert result["warnings"] == [
        f"A: FID from 10 images in {DIMS} dimensions: singular covariance, strongly biased; "
        "compare only at equal n, or use KID"
    ]
    assert result["fid"] == pytest.approx(reference_fid(a, b), rel=1e-6)  # singular covariance: still exact
    assert main(["fid", str(a), str(b), "--dims", str(DIMS), "--num-workers", "0"]) == 0
    assert f"warning: A: FID from 10 images in {DIMS} dimensions: singular" in capsys.readouterr().out


def test_infinity_and_seed(folders, fake_inception, capsys, tmp_path):
    a, b = folders
    result = fid_json(capsys, str(a), str(b), "--infinity", "--seed", "3")
    inf = result["fid_infinity"]
    assert inf["ci_low"] <= inf["value"] <= inf["ci_high"] and inf["residual"] >= 0
    assert inf["sizes"][-1] == 90 and len(inf["sizes"]) == len(inf["fids"])
    assert inf["fids"][-1] == pytest.approx(result["fid"], rel=1e-9)  # the full set is its own largest subset
    again = fid_json(capsys, str(a), str(b), "--infinity", "--seed", "3")
    assert again == result
    other = fid_json(capsys, str(a), str(b), "--infinity", "--seed", "4")
    assert other["fid"] == result["fid"] and other["fid_ci_low"] != result["fid_ci_low"]
    # with generated statistics only, FID-infinity is explained, not computed
    assert main(["fid", str(b), str(tmp_path / "gen.npz"), "--save-stats", "--dims", str(DIMS)]) == 0
    capsys.readouterr()
    result = fid_json(capsys, str(a), str(tmp_path / "gen.npz"), "--infinity")
    assert result["fid_infinity"] is None
    assert any(note.startswith("FID-infinity: needs the generated side's features") for note in result["notes"])


# --- bad input: one line, exit 2 --------------------------------------------------------------------------


# name -> (arguments after `fid`, a fragment of the one error line); {d} is the folder `bad_inputs` fills
BAD_INPUTS = {
    "missing": (["{d}/nope", "{d}/good"], "no such file or folder: {d}/nope"),
    "empty": (["{d}/good", "{d}/empty"], "no images in {d}/empty"),
    "corrupt": (["{d}/good", "{d}/corrupt"], "cannot read image {d}/corrupt/0002.png"),
    "corrupt_in_worker": (["{d}/corrupt", "{d}/good", "--num-workers", "2"], "cannot read image {d}/corrupt/0002"),
    "one_image": (["{d}/good", "{d}/one"], "{d}/one holds 1 image (0000.png); FID needs at least 2"),
    "sizes": (["{d}/sizes", "{d}/good"], "images of different sizes in one batch"),
    "no_sigma": (["{d}/no_sigma.npz", "{d}/good"], "no_sigma.npz has no sigma"),
    "junk_npz": (["{d}/good", "{d}/junk.npz"], "cannot read {d}/junk.npz as an .npz"),
    "dims_vs_flag": (["{d}/d192.npz", "{d}/good"], "holds 192-d statistics but --dims is 64"),
    "dims_between_sides": (["{d}/d64.npz", "{d}/d192.npz"], "d192.npz holds 192-d statistics"),
    "not_a_folder": (["{d}/image.png", "{d}/good"], "neither a folder of images nor an .npz"),
    "stats_exist": (["{d}/good", "{d}/d64.npz", "--save-stats"], "d64.npz already exists"),
}


@pytest.fixture
def bad_inputs(tmp_path) -> Path:
    """Every input BAD_INPUTS refers to, in ``tmp_path``."""
    write_images(tmp_path / "good", 4, seed=0)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images")
    corrupt = write_images(tmp_path / "corrupt", 4, seed=0)
    (corrupt / "0002.png").write_bytes(b"not a png")
    write_images(tmp_path / "one", 1, seed=0)
    sizes = write_images(tmp_path / "sizes", 3, seed=0)
    write_images(tmp_path / "big", 1, seed=0, size=16)
    (tmp_path / "big" / "0000.png").rename(sizes / "0003.png")
    np.savez(tmp_path / "no_sigma.npz", mu=np.zeros(DIMS))
    np.savez(tmp_path / "d192.npz", mu=np.zeros(192), sigma=np.eye(192))
    np.savez(tmp_path / "d64.npz", mu=np.zeros(DIMS), sigma=np.eye(DIMS))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    (tmp_path / "image.png").write_bytes(b"x")
    return tmp_path


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(name, bad_inputs, fake_inception, capsys):
    args, fragment = BAD_INPUTS[name]
    args = [arg.format(d=bad_inputs) for arg in args]
    workers = [] if "--num-workers" in args else ["--num-workers", "0"]
    assert main(["fid", *args, "--dims", str(DIMS), *workers]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("diffbench fid: error: ") and captured.err.count("\n") == 1, captured.err
    assert fragment.format(d=bad_inputs) in captured.err and captured.out == ""


def test_missing_weights_are_one_line_without_download(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    a = write_images(tmp_path / "a", 3, seed=0)
    for extra in ([], ["--fid-weights", str(tmp_path / "nowhere.pth")]):
        assert main(["fid", str(a), str(a), "--num-workers", "0", *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("diffbench fid: error: FID Inception weights not found")
        assert ("nowhere.pth" in err) == bool(extra)


def test_report_formats_without_optional_numbers():
    """Statistics on both sides: the FID (closed form: |mu1 - mu2|^2 for equal covariances), notes instead of
    the numbers that need features, and the small-n warning from a stored n."""
    a = fid_cli.Side(Path("a.npz"), np.zeros(8), np.eye(8), None)
    report = fid_cli.compare(a, fid_cli.Side(Path("b.npz"), np.ones(8), np.eye(8), 5))
    assert report.fid == pytest.approx(8.0) and report.ci is None and report.kid is None
    text = fid_cli.format_report(report)
    assert text.splitlines()[0] == "FID:  8.0" and "warning: B: FID from 5 images in 8 dimensions" in text
    assert "n of A unknown" in text and "A (a.npz) and B (b.npz) hold only mu and sigma" in text
    assert json.loads(json.dumps(report.to_json()))["fid"] == 8.0
