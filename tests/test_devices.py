"""Device per xdist worker and CPU threads per worker (CUDA and MPS availability are injected)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from diffbench.devices import (
    DEVICE_KINDS,
    parse_threads,
    resolve_device,
    threads_per_worker,
    value_threads,
    worker_index,
)


@pytest.mark.parametrize("worker_id, index", [("gw0", 0), ("gw3", 3), ("gw12", 12), (None, 0), ("master", 0), ("", 0)])
def test_worker_index(worker_id, index):
    assert worker_index(worker_id) == index


@pytest.mark.parametrize("worker_id", ["gw", "gwx", "w3", "GW3", "gw-1", "gw 1", "worker3"])
def test_worker_index_rejects_bad_ids(worker_id):
    with pytest.raises(ValueError, match=repr(worker_id)):
        worker_index(worker_id)


def test_workers_round_robin_over_two_gpus():
    got = [resolve_device("auto", f"gw{i}", cuda_count=2, mps_available=False) for i in range(4)]
    assert got == [torch.device("cuda", i) for i in (0, 1, 0, 1)]
    assert [resolve_device("cuda", f"gw{i}", cuda_count=2) for i in range(4)] == got


@given(worker=st.integers(0, 200), count=st.integers(1, 16))
def test_round_robin_is_worker_mod_count(worker, count):
    assert resolve_device("cuda", f"gw{worker}", cuda_count=count) == torch.device("cuda", worker % count)


def test_auto_falls_back_to_mps_then_cpu():
    assert resolve_device("auto", "gw1", cuda_count=0, mps_available=True) == torch.device("mps")
    assert resolve_device("auto", "gw1", cuda_count=0, mps_available=False) == torch.device("cpu")
    assert resolve_device(None, None, cuda_count=0, mps_available=False) == torch.device("cpu")
    assert resolve_device(" auto ", None, cuda_count=0, mps_available=False) == torch.device("cpu")


def test_literal_devices_are_taken_as_given():
    assert resolve_device("cpu", "gw3", cuda_count=4, mps_available=True) == torch.device("cpu")
    assert resolve_device("cuda:1", "gw0", cuda_count=2) == torch.device("cuda", 1)
    assert resolve_device("mps", "gw2", cuda_count=0, mps_available=True) == torch.device("mps")


@pytest.mark.parametrize(
    "spec, kwargs, needle",
    [
        ("cuda", {"cuda_count": 0}, "'cuda'"),
        ("cuda:0", {"cuda_count": 0}, "'cuda:0'"),
        ("cuda:2", {"cuda_count": 2}, "'cuda:2'"),
        ("mps", {"mps_available": False}, "'mps'"),
    ],
)
def test_unavailable_device_raises_naming_it(spec, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        resolve_device(spec, **({"cuda_count": 0, "mps_available": False} | kwargs))


@pytest.mark.parametrize("spec", ["tpu", "cuda:x", "cpu:0", "mps:1", "gpu"])
def test_unknown_device_lists_the_allowed_ones(spec):
    with pytest.raises(ValueError, match=repr(spec)) as info:
        resolve_device(spec, cuda_count=2, mps_available=True)
    for kind in DEVICE_KINDS:
        assert kind in str(info.value)


@pytest.mark.parametrize(
    "workers, cores, threads", [(2, 2, 1), (1, 2, 2), (10, 2, 1), (4, 16, 4), (3, 16, 5), (0, 8, 8)]
)
def test_threads_per_worker(workers, cores, threads):
    assert threads_per_worker(workers, cores=cores) == threads


@given(workers=st.integers(1, 64), cores=st.integers(1, 256))
def test_threads_never_oversubscribe(workers, cores):
    n = threads_per_worker(workers, cores=cores)
    assert n >= 1 and (n * workers <= cores or n == 1)


@pytest.mark.parametrize("text, threads", [("1", 1), (" 4 ", 4), ("auto", None), ("AUTO", None), (None, 1)])
def test_parse_threads(text, threads):
    assert parse_threads(text) == threads


@pytest.mark.parametrize("text", ["0", "-1", "1.5", "two", ""])
def test_bad_threads_are_refused_by_name(text):
    with pytest.raises(ValueError, match="--threads"):
        parse_threads(text)


@given(workers=st.integers(1, 64), fixed=st.integers(1, 32))
def test_value_threads_do_not_depend_on_the_workers_unless_auto(workers, fixed):
    assert value_threads(str(fixed), workers) == fixed
    assert value_threads("auto", workers) == threads_per_worker(workers)
