"""``diffbench verify-determinism``: a model read from a cache is put in eval mode and passes, a model stuck in
train mode with dropout fails (exit 1), a model the cache lacks is skipped with the pytest command that builds it
(never trained), and bad input is one error line with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import diffbench.cli as cli
from diffbench.cache import ArtifactCache
from diffbench.cli import COMMANDS, DeterminismSubject, NotCached, main
from diffbench.experiments import RUN_RECIPE_VERSION, class_labels
from diffbench.families.size_factors import model_spec
from diffbench.models import ModelConfig
from diffbench.profiles import PROFILES
from diffbench.schedules import NoiseSchedule

SMOKE = PROFILES["smoke"]
FAST = ["--samples", "3", "--steps", "2"]  # 3 runs x 3 samples x 2 DDIM steps: well under a second per model
SHAPE = (1, 8, 8)
NUM_CLASSES = 3
PREFIX = "diffbench verify-determinism: error: "


@pytest.fixture(autouse=True)
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command must read the cache, never train: any call into the trainers fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("verify-determinism must not train a model")

    monkeypatch.setattr("diffbench.experiments.train", refuse)
    monkeypatch.setattr("diffbench.experiments.train_cached", refuse)
    monkeypatch.setattr("diffbench.experiments.final_model", refuse)


def cache_untrained_run(cache_dir: Path, model_id: str) -> Path:
    """Publish ``model_id``'s run in the cache under its real key, with untrained (seeded) weights as its final
    checkpoint: the cache entry the size_factors benchmark would leave, without the training."""
    spec = model_spec(SMOKE, model_id)
    weights = spec.model.build(seed=spec.train.seed).state_dict()
    cache = ArtifactCache(cache_dir)
    cache.get_or_build(
        "runs",
        spec,
        lambda _workdir: {"checkpoints": {spec.train.epochs: weights}, "history": []},
        version=RUN_RECIPE_VERSION,
    )
    return cache.path("runs", spec, version=RUN_RECIPE_VERSION)


class StuckInTrainMode(nn.Module):
    """A model whose ``eval()`` does nothing: its dropout stays on whatever the command asks."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def train(self, mode: bool = True) -> StuckInTrainMode:
        return super().train(True)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        return self.net(x, t, y)


def tiny_unet(dropout: float) -> nn.Module:
    config = dict(widths=(8, 16), image_size=8, attention_resolutions=(4,), dropout=dropout, num_classes=NUM_CLASSES)
    return ModelConfig.of("ddpm_unet", **config).build(seed=0)


@pytest.fixture
def fake_models(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, object]:
    """Replace the cache lookup: ``teacher`` is a tiny conditional UNet with dropout 0.5 handed over in train mode
    (the command must switch it to eval), ``data-s0.5`` is one stuck in train mode, every other id is not cached.
    Returns the calls' record: ``ids`` asked for, ``cond`` and ``modes`` seen."""
    seen: dict[str, object] = {"ids": [], "cond": {}}

    def fake(profile, model_id, cache, device, num_samples, data_root=None) -> DeterminismSubject:
        seen["ids"].append(model_id)
        if model_id not in ("teacher", "data-s0.5"):
            raise NotCached(f"not in the cache {cache.root} (fake)")
        net = tiny_unet(dropout=0.5).train()
        model = net if model_id == "teacher" else StuckInTrainMode(net)
        cond = {"y": class_labels(num_samples, NUM_CLASSES)}
        seen["cond"][model_id] = cond["y"]
        return DeterminismSubject(model, NoiseSchedule.linear(1000), SHAPE, cond, 1.0, f"fake/{model_id}")

    monkeypatch.setattr(cli, "cached_model", fake)
    monkeypatch.setenv("DIFFBENCH_CACHE", str(tmp_path / "default-cache"))  # never the user's cache
    return seen


def run(*argv: str) -> int:
    return main(["verify-determinism", *argv])


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(PREFIX), err
    return err


# --- a model actually read from a cache -------------------------------------------------------------------


def test_a_cached_model_is_read_from_the_cache_and_passes(tmp_path: Path, capsys: pytest.CaptureFixture):
    artifact = cache_untrained_run(tmp_path / "cache", "teacher")
    out_json = tmp_path / "out" / "determinism.json"
    code = run("--models", "teacher,data-s0.5", "--cache", str(tmp_path / "cache"), "--json", str(out_json), *FAST)
    out = capsys.readouterr().out
    assert code == 0, out
    lines = {line.split(":")[0]: line for line in out.splitlines()}
    assert "same-seed max|dx| 0," in lines["teacher"] and lines["teacher"].endswith(", deterministic")
    assert "device cpu" in lines["teacher"] and "batch-layout max|dx|" in lines["teacher"]
    # the student is not cached: skipped with the cell that builds it, in the same cache
    skip = lines["data-s0.5"]
    assert "skipped" in skip and f"--cache-dir {tmp_path / 'cache'}" in skip
    assert "pytest 'benchmarks/bench_size_factors.py::test_noise_prediction[data-s0.5]' --profile smoke" in skip
    assert out.splitlines()[-1].startswith("OK")
    document = json.loads(out_json.read_text())
    record = document["models"]["teacher"]
    assert document["deterministic"] is True and set(document["skipped"]) == {"data-s0.5"}
    assert record["deterministic"] is True and record["same_seed_max_abs"] == 0.0
    assert record["artifact"] == str(artifact) and record["clip_denoised"] == 1.0
    assert (record["num_samples"], record["steps"], record["batch_sizes"], record["seed"]) == (3, 2, [3, 2], 0)
    assert 0 <= record["batch_layout_max_abs"] < 1e-3 * record["sample_max_abs"]
    assert record["batch_layout_relative"] == pytest.approx(record["batch_layout_max_abs"] / record["sample_max_abs"])


def test_cached_model_reads_the_final_checkpoint_with_balanced_labels(tmp_path: Path):
    artifact = cache_untrained_run(tmp_path / "cache", "teacher")
    cache = ArtifactCache(tmp_path / "cache")
    subject = cli.cached_model(SMOKE, "teacher", cache, torch.device("cpu"), 12)
    spec = model_spec(SMOKE, "teacher")
    expected = spec.model.build(seed=spec.train.seed).state_dict()  # what cache_untrained_run stored
    assert all(torch.equal(value, expected[name]) for name, value in subject.model.state_dict().items())
    assert not subject.model.training and subject.artifact == str(artifact)
    assert torch.equal(subject.cond["y"], torch.arange(12) % 10)  # digits: class i mod 10
    assert subject.sample_shape == (1, 16, 16) and subject.clip_denoised == 1.0
    assert subject.schedule.num_steps == SMOKE.size_factors.diffusion_steps
    with pytest.raises(NotCached, match=r"not in the cache .* \(no runs/[0-9a-f]{16}\.pt\)"):
        cli.cached_model(SMOKE, "distill-s0.5", cache, torch.device("cpu"), 12)


def test_nothing_cached_is_exit_2_with_the_build_commands(tmp_path: Path, capsys: pytest.CaptureFixture):
    cache_dir = tmp_path / "empty"
    assert run("--models", "teacher,distill-s0.3", "--cache", str(cache_dir), *FAST) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith(PREFIX), captured.err
    assert "none of the requested models (teacher, distill-s0.3)" in captured.err
    assert "test_noise_prediction[teacher]' --profile smoke --cache-dir" in captured.out
    # a size outside the profile's list needs --size-factors for the cell to exist
    assert "test_noise_prediction[distill-s0.3]' --profile smoke --size-factors 0.3 --cache-dir" in captured.out
    assert not cache_dir.exists(), "looking must not create the cache"


def test_an_unreadable_cache_entry_is_skipped_not_trained(tmp_path: Path, capsys: pytest.CaptureFixture):
    artifact = cache_untrained_run(tmp_path / "cache", "teacher")
    artifact.write_bytes(b"truncated")
    assert run("--models", "teacher", "--cache", str(tmp_path / "cache"), *FAST) == 2
    captured = capsys.readouterr()
    assert "unreadable" in captured.out and "test_noise_prediction[teacher]" in captured.out
    assert captured.err.startswith(PREFIX)


# --- the verdict (the cache lookup replaced by tiny models) ------------------------------------------------


def test_the_command_puts_the_model_in_eval_mode(fake_models: dict, capsys: pytest.CaptureFixture):
    # the fake teacher has dropout 0.5 and arrives in train mode: only eval() makes it deterministic
    assert run("--models", "teacher", *FAST) == 0
    out = capsys.readouterr().out
    assert "teacher: device cpu, same-seed max|dx| 0," in out and "NOT deterministic" not in out
    assert torch.equal(fake_models["cond"]["teacher"], torch.tensor([0, 1, 2]))


def test_dropout_left_on_is_exit_1(fake_models: dict, tmp_path: Path, capsys: pytest.CaptureFixture):
    out_json = tmp_path / "result.json"
    assert run("--models", "teacher,data-s0.5", "--json", str(out_json), *FAST) == 1
    out = capsys.readouterr().out
    assert "data-s0.5: device cpu" in out and out.count("NOT deterministic") == 1
    assert out.splitlines()[-1].startswith("NOT DETERMINISTIC: data-s0.5")
    document = json.loads(out_json.read_text())
    assert document["deterministic"] is False
    assert document["models"]["data-s0.5"]["deterministic"] is False
    assert document["models"]["data-s0.5"]["same_seed_max_abs"] > 0
    assert document["models"]["teacher"]["same_seed_max_abs"] == 0.0


def test_all_selects_the_teacher_and_every_student_of_the_profile(fake_models: dict, capsys: pytest.CaptureFixture):
    assert run("--models", "all", *FAST) == 1  # data-s0.5 is the stuck one
    sizes = sorted(SMOKE.size_factors.sizes, reverse=True)
    assert fake_models["ids"] == ["teacher", *(f"{mode}-s{s:g}" for s in sizes for mode in ("data", "distill"))]
    out = capsys.readouterr().out
    assert out.count(": skipped, ") == 2 * len(sizes) - 1 and "(2 model(s) checked, 7 skipped" in out


# --- bad input --------------------------------------------------------------------------------------------


def test_an_unknown_model_id_names_the_available_ones(fake_models: dict, capsys: pytest.CaptureFixture):
    assert run("--models", "teacher,student-s0.5", *FAST) == 2
    err = one_error_line(capsys)
    assert "'student-s0.5'" in err and "teacher, data-s1, distill-s1" in err and "distill-s0.05" in err
    assert fake_models["ids"] == [], "nothing is looked up before the ids are checked"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--samples", "0"], "--samples must be >= 1"),
        (["--steps", "0"], "--steps must be in [1, 1000]"),
        (["--steps", "1001"], "--steps must be in [1, 1000]"),
        (["--eta", "1.5"], "--eta must be in [0, 1]"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--models", ""], "--models is empty"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(
    argv: list[str], message: str, fake_models: dict, capsys: pytest.CaptureFixture
):
    assert run(*argv) == 2
    assert message in one_error_line(capsys)
    assert fake_models["ids"] == []


def test_the_command_is_registered_and_documented(capsys: pytest.CaptureFixture):
    assert "verify-determinism" in COMMANDS and "verify-determinism" in cli.__doc__
    assert main(["--help"]) == 0 and "verify-determinism" in capsys.readouterr().out
    assert run("--help") == 0 and "--steps" in capsys.readouterr().out
