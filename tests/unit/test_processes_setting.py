"""``--processes`` / ACCOUNTS_PROCESSES: how many serving processes, 0 meaning one per core;
and what a worker inherits from the supervisor (every setting, as its variable)."""

from __future__ import annotations

import dataclasses
import os

import pytest

from accounts_grpc import supervisor
from accounts_grpc.config import Settings, SettingsError


def test_the_default_is_one_process_per_core_this_process_may_use() -> None:
    assert Settings().processes == 0
    assert Settings().process_count() == len(os.sched_getaffinity(0))
    assert Settings(processes=1).process_count() == 1
    assert Settings(processes=3).process_count() == 3
    assert Settings.load(env={"ACCOUNTS_PROCESSES": "4"}).process_count() == 4


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
