"""``--processes`` / ACCOUNTS_PROCESSES: how many serving processes, 0 meaning one per core;
and what a worker inherits from the supervisor (every setting, as its variable)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from accounts_grpc import supervisor
from accounts_grpc.config import Settings, SettingsError, usable_cores


def test_the_default_is_one_process_per_core_this_process_may_use() -> None:
    assert Settings().processes == 0
    assert Settings().process_count() == usable_cores() <= len(os.sched_getaffinity(0))
    assert Settings(processes=1).process_count() == 1
    assert Settings(processes=3).process_count() == 3
    assert Settings.load(env={"ACCOUNTS_PROCESSES": "4"}).process_count() == 4


def _cgroup(tmp_path: Path, self_line: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    proc = tmp_path / "self-cgroup"
    proc.write_text(self_line + "\n")
    return root, proc


@pytest.mark.parametrize(("self_line", "files", "expected"), [
    # cgroup v2, a container limited to 1.5 CPUs: 2 processes (rounded up)
    ("0::/", {"cpu.max": "150000 100000\n"}, 2),
    ("0::/kubepods/pod1/c1", {"kubepods/pod1/c1/cpu.max": "100000 100000\n"}, 1),
    ("0::/", {"cpu.max": "max 100000\n"}, None),  # no limit: every core it may run on
    ("0::/", {}, None),  # nothing to read: the same
    # cgroup v1
    ("4:cpu,cpuacct:/docker/abc", {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "100000\n",
                                   "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"}, 1),
    ("4:cpu,cpuacct:/", {"cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
                         "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, None),
])
def test_a_cgroup_cpu_limit_lowers_the_default(
        tmp_path: Path, self_line: str, files: dict[str, str], expected: int | None) -> None:
    root, proc = _cgroup(tmp_path, self_line, files)
    cores = len(os.sched_getaffinity(0))
    assert usable_cores(root, proc) == (cores if expected is None else min(cores, expected))


def test_a_negative_count_is_refused() -> None:
    with pytest.raises(SettingsError, match="processes"):
        Settings(processes=-1)


def test_a_worker_gets_every_setting_back_from_its_environment() -> None:
    settings = Settings(grpc_port=50100, http_port=-1, processes=3, log_json=True,
                        shutdown_grace=2.5, trusted_proxies="10.0.0.0/8",
                        database_url="postgresql://u@h/db?options=-csearch_path%3Dx")
    env = supervisor.worker_env(settings, 2, 7, "/tmp/metrics")
    assert Settings.load(env=env) == settings
    assert env["PROMETHEUS_MULTIPROC_DIR"] == "/tmp/metrics"
    assert env[supervisor.WORKER_ENV] == "2:7"
    assert {f.name for f in dataclasses.fields(Settings)} == {
        k.removeprefix("ACCOUNTS_").lower() for k in env if k.startswith("ACCOUNTS_")}


def test_the_worker_identity_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(supervisor.WORKER_ENV, "2:7")
    assert supervisor.worker_identity() == (2, 7)
    assert supervisor.worker_identity() is None, "a process the worker starts is no worker"
