"""What the front worker's requests no longer recompute: gunicorn's settings (looked up once per
worker, not at every request) and whether a peer may set forwarding headers (once per address)."""

from __future__ import annotations

from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.http import message as gunicorn_message

from livecode.web import front_worker
from livecode.web.front_worker import SettledConfig


def test_a_setting_is_read_from_the_config_once_and_keeps_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = Config()
    cfg.set("limit_request_line", 1234)
    asked: list[str] = []
    real = Config.__getattr__

    def counting(self: Config, name: str) -> Any:
        asked.append(name)
        return real(self, name)

    monkeypatch.setattr(Config, "__getattr__", counting)
    settled = SettledConfig(cfg)
    assert [settled.limit_request_line for _ in range(5)] == [1234] * 5
    assert asked == ["limit_request_line"]
    assert settled.is_ssl is cfg.is_ssl and settled.forwarded_allow_networks() == cfg.forwarded_allow_networks()
    with pytest.raises(AttributeError):
        _ = settled.no_such_setting


class _Msg(gunicorn_message.HeaderPolicy):
    def __init__(self, cfg: Any, peer: Any) -> None:
        self.cfg, self.peer_addr = cfg, peer


def test_a_peer_is_trusted_as_gunicorn_says_and_its_address_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    assert gunicorn_message.HeaderPolicy._peer_is_trusted_proxy is front_worker.peer_is_trusted_proxy
    cfg = Config()
    cfg.set("forwarded_allow_ips", "10.0.0.0/8,192.168.1.7")
    checked: list[str] = []
    real = front_worker._peer_is_trusted_proxy

    def counting(self: Any) -> bool:
        checked.append(self.peer_addr[0])
        return bool(real(self))

    monkeypatch.setattr(front_worker, "_peer_is_trusted_proxy", counting)
    monkeypatch.setattr(front_worker, "_trusted_peers", {})
    cases = {"10.1.2.3": True, "192.168.1.7": True, "192.168.1.8": False, "127.0.0.1": False, "not-an-ip": False}
    for _ in range(3):
        for ip, trusted in cases.items():
            assert _Msg(cfg, (ip, 5000))._peer_is_trusted_proxy() is trusted
            assert real(_Msg(cfg, (ip, 5000))) is trusted  # gunicorn's own answer
    assert sorted(checked) == sorted(cases)  # each address checked once
    assert _Msg(cfg, "/run/api.sock")._peer_is_trusted_proxy() is True  # a UNIX socket, as gunicorn
    other = Config()
    other.set("forwarded_allow_ips", "*")
    assert _Msg(other, ("127.0.0.1", 1))._peer_is_trusted_proxy() is True  # per config, not shared


def test_a_worker_runs_on_its_settled_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from gunicorn.workers.gthread import ThreadWorker

    from livecode.web.front_worker import GuardedThreadWorker, SettledConfig

    seen: list[object] = []
    monkeypatch.setattr(ThreadWorker, "init_process", lambda self: seen.append(self.cfg))
    w = object.__new__(GuardedThreadWorker)
    w.cfg = object()
    w.init_process()  # gunicorn calls it in the worker, after the fork
    assert len(seen) == 1 and isinstance(seen[0], SettledConfig) and w.cfg is seen[0]
