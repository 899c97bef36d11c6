"""Artifact cache: stable keys, build-once across processes, and never trusting an unreadable entry."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import diffbench
from diffbench import cache as cache_module
from diffbench.cache import (
    ENV_VAR,
    ArtifactCache,
    ArtifactMissingError,
    artifact_key,
    config_hash,
    default_cache_dir,
)
from diffbench.data import DataConfig
from diffbench.experiments import RunSpec
from diffbench.models import ModelConfig
from diffbench.provenance import git_state
from diffbench.schedules import ScheduleConfig
from diffbench.training import TrainConfig

REPO = Path(__file__).resolve().parents[1]
SPEC = RunSpec(
    ModelConfig.of("mlp", hidden=16),
    DataConfig("gmm2d"),
    ScheduleConfig("cosine", 1000),
    TrainConfig(epochs=3, lr=3.16e-5, betas=(0.9, 0.99), ema_decay=0.999),
)


def _subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@dataclass(frozen=True)
class Small:
    a: float = 0.0
    b: int = 0
    c: str = ""


# ------------------------------------------------------------------------------------------- hashing


def test_config_hash_is_16_hex_digits_and_repeatable():
    h = config_hash(SPEC)
    assert len(h) == 16 and int(h, 16) >= 0
    assert config_hash(replace(SPEC)) == h


def test_config_hash_is_stable_across_processes():
    """Another interpreter, with another str-hash seed, computes the same key (RunSpec's parts, so the child
    need not import the metrics stack)."""
    code = textwrap.dedent("""
        from diffbench.cache import artifact_key, config_hash
        from diffbench.data import DataConfig
        from diffbench.models import ModelConfig
        from diffbench.schedules import ScheduleConfig
        from diffbench.training import TrainConfig
        spec = (ModelConfig.of("mlp", hidden=16), DataConfig("gmm2d"), ScheduleConfig("cosine", 1000),
                TrainConfig(epochs=3, lr=3.16e-5, betas=(0.9, 0.99), ema_decay=0.999))
        print(config_hash(spec), artifact_key("runs", spec, 3))
    """)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env=_subprocess_env(PYTHONHASHSEED="12345"),
        cwd=REPO,
    )
    spec = (SPEC.model, SPEC.data, SPEC.schedule, SPEC.train)
    assert out.stdout.split() == [config_hash(spec), artifact_key("runs", spec, 3)]


@given(a=st.floats(allow_nan=False), b=st.integers(), c=st.text(max_size=5), other=st.data())
def test_config_hash_changes_with_any_field(a, b, c, other):
    base = Small(a, b, c)
    field = other.draw(st.sampled_from(["a", "b", "c"]))
    strategy = {"a": st.floats(allow_nan=False), "b": st.integers(), "c": st.text(max_size=5)}[field]
    value = other.draw(strategy.filter(lambda v: v != getattr(base, field)))
    assert config_hash(replace(base, **{field: value})) != config_hash(base)
    assert config_hash(Small(a, b, c)) == config_hash(base)


def test_config_hash_sees_nested_fields():
    h = config_hash(SPEC)
    assert config_hash(replace(SPEC, model=ModelConfig.of("mlp", hidden=17))) != h
    assert config_hash(replace(SPEC, train=replace(SPEC.train, betas=(0.9, 0.999)))) != h
    assert config_hash(replace(SPEC, data=replace(SPEC.data, seed=1))) != h
    assert config_hash(replace(SPEC, schedule=ScheduleConfig("linear", 1000))) != h
    # keyword order does not matter
    assert ModelConfig.of("mlp", hidden=16, num_layers=2) == ModelConfig.of("mlp", num_layers=2, hidden=16)


def test_config_hash_rejects_unhashable_values():
    with pytest.raises(TypeError, match="object"):
        config_hash(Small(a=object()))  # type: ignore[arg-type]


def test_artifact_key_hashes_kind_version_and_config():
    key = artifact_key("runs", SPEC)
    assert len(key) == 16 and key == artifact_key("runs", replace(SPEC), version=1)
    assert artifact_key("runs", SPEC, version=2) != key  # a bumped recipe never reuses the old artifact
    assert artifact_key("students", SPEC) != key
    assert artifact_key("runs", replace(SPEC, train=replace(SPEC.train, seed=1))) != key
    assert len({artifact_key("runs", SPEC, version=v) for v in range(1, 50)}) == 49


@pytest.mark.parametrize("version", [0, -1, 1.0, "2", True, None], ids=repr)
def test_artifact_key_rejects_bad_versions(version):
    with pytest.raises(ValueError, match=f"version must be an int >= 1, got {version!r}"):
        artifact_key("runs", SPEC, version)


@pytest.mark.parametrize("kind", ["", "a/b", "../runs", "runs "], ids=repr)
def test_artifact_key_rejects_kinds_that_are_not_plain_names(kind):
    with pytest.raises(ValueError, match="kind must be"):
        artifact_key(kind, SPEC)


# ------------------------------------------------------------------------------------------ building


def _counting_builder(counter: Path, value: dict):
    def build(workdir: Path) -> dict:
        with open(counter, "a") as f:
            f.write("built\n")
        return value

    return build


def _builds(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


VALUE = {"weights": torch.arange(6.0).reshape(2, 3), "history": [{"loss": 0.5}], "epoch": 3}


def _assert_value(got: dict) -> None:
    assert torch.equal(got["weights"], VALUE["weights"])
    assert got["history"] == VALUE["history"] and got["epoch"] == VALUE["epoch"]


def test_get_or_build_builds_once_and_reloads(tmp_path):
    cache, counter = ArtifactCache(tmp_path / "cache"), tmp_path / "count"
    _assert_value(cache.get_or_build("runs", SPEC, _counting_builder(counter, VALUE)))
    _assert_value(cache.get_or_build("runs", SPEC, _counting_builder(counter, VALUE)))
    assert _builds(counter) == 1
    assert cache.path("runs", SPEC) == tmp_path / "cache" / "runs" / f"{artifact_key('runs', SPEC)}.pt"
    _assert_value(torch.load(cache.path("runs", SPEC), weights_only=True))


def test_builder_gets_a_workdir_with_the_config(tmp_path):
    seen = []

    def build(workdir: Path) -> dict:
        seen.append(workdir)
        return VALUE

    cache = ArtifactCache(tmp_path)
    cache.get_or_build("runs", SPEC, build)
    assert seen == [cache.workdir("runs", SPEC)] and seen[0].is_dir()
    saved = json.loads((seen[0] / "config.json").read_text())
    assert saved["__type__"] == "RunSpec" and saved["train"]["lr"] == repr(3.16e-5)


def test_a_new_recipe_version_is_built_and_stored_apart(tmp_path):
    cache, counter = ArtifactCache(tmp_path), tmp_path / "count"
    v2 = {**VALUE, "epoch": 4}
    _assert_value(cache.get_or_build("runs", SPEC, _counting_builder(counter, VALUE)))
    got = cache.get_or_build("runs", SPEC, _counting_builder(counter, v2), version=2)
    assert got["epoch"] == 4 and _builds(counter) == 2
    assert cache.path("runs", SPEC, version=2) != cache.path("runs", SPEC)
    assert cache.workdir("runs", SPEC, version=2) != cache.workdir("runs", SPEC)
    _assert_value(cache.get_or_build("runs", SPEC, _counting_builder(counter, v2)))  # version 1 is still there
    assert _builds(counter) == 2


# ---------------------------------------------------------------------------------------- provenance


def test_provenance_round_trips_beside_the_entry(tmp_path):
    cache = ArtifactCache(tmp_path)
    assert cache.provenance("runs", SPEC) is None
    got = cache.get_or_build("runs", SPEC, lambda workdir: VALUE, version=3, device=torch.device("cpu"))
    assert got.keys() == VALUE.keys()  # the stored object is exactly what the builder returned
    assert torch.load(cache.path("runs", SPEC, version=3), weights_only=True).keys() == VALUE.keys()
    record = cache.provenance("runs", SPEC, version=3)
    key = artifact_key("runs", SPEC, 3)
    assert record == json.loads((tmp_path / "runs" / f"{key}.json").read_text())
    assert {"kind": "runs", "key": key, "version": 3, "device": "cpu"}.items() <= record.items()
    assert record["git_sha"] == git_state()["git_sha"] and record["git_dirty"] == git_state()["git_dirty"]
    assert record["torch"] == torch.__version__ and record["cuda"] == torch.version.cuda
    assert record["diffbench"] == diffbench.__version__ and record["host"] == socket.gethostname()
    assert record["time"] and record["build_seconds"] >= 0
    data = cache.path("runs", SPEC, version=3).read_bytes()
    assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["size"] == len(data)
    assert cache.provenance("runs", SPEC) is None  # version 1 was never built


def test_the_record_is_the_commit_point(tmp_path, monkeypatch):
    """The .pt is published first, then its record; until the record is there the entry does not count."""
    cache, seen = ArtifactCache(tmp_path), []
    key = artifact_key("runs", SPEC)
    real_publish = cache_module._publish_file

    def publish(tmp, final):
        _, _, problem = cache._check("runs", key)
        seen.append((final.name, problem))
        return real_publish(tmp, final)

    monkeypatch.setattr(cache_module, "_publish_file", publish)
    cache.get_or_build("runs", SPEC, lambda workdir: VALUE)
    assert [name for name, _ in seen] == [f"{key}.pt", f"{key}.json"]
    assert seen[0][1] == ""  # nothing there yet
    assert "has no record" in seen[1][1]  # the .pt alone is not an entry
    assert cache._check("runs", key)[2] is None


def test_touched_lists_each_returned_artifact_once_and_resets(tmp_path):
    other = replace(SPEC, train=replace(SPEC.train, seed=1))
    builder = ArtifactCache(tmp_path)
    builder.get_or_build("runs", SPEC, lambda workdir: VALUE, device="cpu")
    builder.get_or_build("runs", SPEC, lambda workdir: VALUE)
    assert [e["key"] for e in builder.touched] == [artifact_key("runs", SPEC)]

    cache = ArtifactCache(tmp_path)  # another worker: loads SPEC, builds `other`
    cache.get_or_build("runs", SPEC, lambda workdir: VALUE)
    cache.get_or_build("runs", other, lambda workdir: VALUE, version=2)
    cache.get_or_build("runs", SPEC, lambda workdir: VALUE)
    loaded, built = cache.touched
    assert loaded == builder.touched[0] == {**cache.provenance("runs", SPEC), "kind": "runs", "version": 1}
    assert loaded["device"] == "cpu" and loaded["git_sha"] == git_state()["git_sha"]
    assert built == cache.provenance("runs", other, version=2)
    assert {"kind": "runs", "key": artifact_key("runs", other, 2), "version": 2}.items() <= built.items()
    json.dumps(cache.touched)  # rows can carry them as they are
    cache.reset_touched()
    assert cache.touched == []
    cache.get_or_build("runs", other, lambda workdir: VALUE, version=2)
    assert cache.touched == [built]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_entry_is_rebuilt_with_a_warning(tmp_path, damage):
    cache, counter = ArtifactCache(tmp_path / "cache"), tmp_path / "count"
    cache.get_or_build("runs", SPEC, _counting_builder(counter, VALUE))
    path = cache.path("runs", SPEC)
    data = path.read_bytes()
    path.write_bytes(
        {"garbage": b"\x00not a torch file\xff" * 10, "truncated": data[: len(data) // 2], "empty": b""}[damage]
    )
    with pytest.warns(RuntimeWarning, match=rf"{re.escape(str(path))} fails its checksum.*rebuilding it"):
        _assert_value(cache.get_or_build("runs", SPEC, _counting_builder(counter, VALUE)))
    assert _builds(counter) == 2
    _assert_value(torch.load(path, weights_only=True))  # the entry was replaced by a good one
    assert cache._check("runs", artifact_key("runs", SPEC))[2] is None


def _leave_marker(path: str) -> None:
    Path(path).touch()


class Payload:
    """Unpickling this object runs ``_leave_marker``: a stand-in for arbitrary code in a pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return _leave_marker, (self.marker,)


def test_an_unrecorded_entry_is_rebuilt_not_unpickled(tmp_path):
    """A .pt without a record (here: one that would run code when unpickled) is not even opened."""
    cache, counter, marker = ArtifactCache(tmp_path / "cache"), tmp_path / "count", tmp_path / "marker"
    path = cache.path("runs", SPEC)
    path.parent.mkdir(parents=True)
    torch.save({"model": Payload(marker)}, path)
    with pytest.warns(RuntimeWarning, match=rf"{re.escape(str(path))} has no record"):
        _assert_value(cache.get_or_build("runs", SPEC, _counting_builder(counter, VALUE)))
    assert not marker.exists()
    assert _builds(counter) == 1


def test_a_recorded_non_weights_only_entry_is_rebuilt_not_unpickled(tmp_path):
    """Even bytes that match their record's checksum are loaded with weights_only: code is never run."""
    cache, counter, marker = ArtifactCache(tmp_path / "cache"), tmp_path / "count", tmp_path / "marker"
    cache.get_or_build("runs", SPEC, _counting_builder(counter, VALUE))
    path, record_path = cache.path("runs", SPEC), cache.path("runs", SPEC).with_suffix(".json")
    path.unlink()
    torch.save({"model": Payload(marker)}, path)
    data = path.read_bytes()
    record = {**json.loads(record_path.read_text()), "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    record_path.write_text(json.dumps(record))
    with pytest.warns(RuntimeWarning, match=rf"{re.escape(str(path))} is unreadable \(UnpicklingError"):
        _assert_value(cache.get_or_build("runs", SPEC, _counting_builder(counter, VALUE)))
    assert not marker.exists()
    assert _builds(counter) == 2


def test_an_entry_without_a_checksum_is_rebuilt(tmp_path):
    """A record from before checksums cannot vouch for its bytes: rebuilt, with a warning, never loaded."""
    cache, counter = ArtifactCache(tmp_path), tmp_path / "count"
    cache.get_or_build("runs", SPEC, _counting_builder(counter, VALUE))
    record_path = cache.path("runs", SPEC).with_suffix(".json")
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({k: v for k, v in record.items() if k not in ("sha256", "size")}))
    with pytest.warns(RuntimeWarning, match="has no checksum"):
        _assert_value(cache.get_or_build("runs", SPEC, _counting_builder(counter, VALUE)))
    assert _builds(counter) == 2
    assert cache.provenance("runs", SPEC)["sha256"] == record["sha256"]  # same bytes, recorded again


def test_load_reads_a_valid_entry_and_never_builds_or_writes(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    with pytest.raises(
        ArtifactMissingError, match=rf"not in the cache .* \(no runs/{artifact_key('runs', SPEC)}\.pt\)"
    ):
        cache.load("runs", SPEC)
    assert not (tmp_path / "cache").exists()  # looking creates nothing
    cache.get_or_build("runs", SPEC, lambda workdir: VALUE)
    _assert_value(ArtifactCache(tmp_path / "cache").load("runs", SPEC))
    path = cache.path("runs", SPEC)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ArtifactMissingError, match=rf"{re.escape(str(path))} fails its checksum"):
        cache.load("runs", SPEC)


def test_publishing_without_hard_links_falls_back_to_rename(tmp_path, monkeypatch):
    """On a file system that refuses link(2) (EPERM), the lock and the publish still work."""

    def no_links(src, dst, *args, **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted", str(src))

    monkeypatch.setattr(os, "link", no_links)
    cache, counter = ArtifactCache(tmp_path), tmp_path / "count"
    _assert_value(cache.get_or_build("runs", SPEC, _counting_builder(counter, VALUE)))
    _assert_value(ArtifactCache(tmp_path).get_or_build("runs", SPEC, _counting_builder(counter, VALUE)))
    assert _builds(counter) == 1
    record, data = cache.provenance("runs", SPEC), cache.path("runs", SPEC).read_bytes()
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(
        f"{artifact_key('runs', SPEC)}{suffix}" for suffix in (".json", ".pt", ".work")
    )  # no lock, claim or temporary file left behind


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=10)
@given(lr=st.floats(1e-6, 1.0), epochs=st.integers(1, 1000))
def test_distinct_configs_get_distinct_entries(tmp_path, lr, epochs):
    cache = ArtifactCache(tmp_path)
    config = TrainConfig(epochs=epochs, lr=lr)
    value = {"epochs": epochs, "lr": torch.tensor(lr, dtype=torch.float64)}
    got = cache.get_or_build("train", config, lambda workdir: value)
    assert got["epochs"] == epochs and got["lr"].item() == lr
    stored = torch.load(cache.path("train", config), weights_only=True)
    assert stored["epochs"] == epochs and stored["lr"].item() == lr


# ------------------------------------------------------------------------------------------ location


def test_env_var_overrides_the_default_dir(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"
    assert ArtifactCache().root == tmp_path / "elsewhere"
    assert ArtifactCache(tmp_path / "explicit").root == tmp_path / "explicit"


def test_env_var_expands_the_home_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(ENV_VAR, "~/artifacts")
    assert default_cache_dir() == tmp_path / "artifacts"


def test_default_dir_without_env_var(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "diffbench"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "diffbench"


def test_a_local_data_path_is_not_part_of_the_key():
    from diffbench.data import DataConfig

    assert config_hash(DataConfig("mnist", root="/a")) == config_hash(DataConfig("mnist", root="/b"))
    assert config_hash(DataConfig("mnist", seed=1)) != config_hash(DataConfig("mnist", seed=2))
