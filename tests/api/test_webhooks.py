"""Webhooks in process: callback_url checks (SSRF rules at submit time and at connect time),
scheduling with the run, the signature, retries with backoff, the deliveries listing and the
secret. The sends go to a real HTTP receiver on loopback (tests/support/receiver.py)."""

from __future__ import annotations

import base64
import json
import socket
import uuid
from typing import Any

import pytest

from livecode.services.webhooks import sender, signing, urls
from livecode.services.webhooks.dispatch import deliver_due
from tests.support.inprocess import LiveApp, expect_error, finish_like_a_worker, uid
from tests.support.receiver import receiver
from tests.support.users import sign_up

LOOPBACK = ("127.0.0.1",)


def execute_url(sid: str) -> str:
    return f"/api/v1/executions/session/{sid}/execute"


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "::1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "fe80::1",
        "224.0.0.1",
        "0.0.0.0",
        "::ffff:127.0.0.1",
        "100.64.0.1",
        "fd00:ec2::254",
    ],
)
def test_non_public_addresses_are_refused_unless_allowed(address: str) -> None:
    assert urls.address_refusal(address, "hooks.example", ()) is not None
    assert urls.address_refusal(address, "hooks.example", ("hooks.example",)) is None  # by name
    assert urls.address_refusal("8.8.8.8", "dns.example", ()) is None


def test_allow_list_ranges_and_url_shapes() -> None:
    assert urls.address_refusal("10.20.3.4", "x", ("10.20.0.0/16",)) is None
    assert urls.address_refusal("10.21.3.4", "x", ("10.20.0.0/16",)) is not None
    for bad in [
        "ftp://h/x",
        "file:///etc/passwd",
        "http://",
        "//h/x",
        "http://u:p@h/x",
        "http://h/a b",
        "http://h:99999/",
        5,
        "",
        "h" * 3000,
    ]:
        with pytest.raises(urls.RefusedUrl):
            urls.parse_url(bad)


def test_a_name_that_resolves_to_loopback_is_refused_at_submit_time() -> None:
    def rebinding(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    with pytest.raises(urls.RefusedUrl, match="loopback"):
        urls.check_url("http://rebind.example/x", (), resolve=rebinding)
    with pytest.raises(urls.RefusedUrl, match="loopback"):
        urls.check_url("http://localhost:8080/x", ())  # the system resolver: localhost is loopback


def test_the_address_actually_connected_is_checked_at_delivery_time() -> None:
    """DNS rebinding: the name looked public when submitted, and resolves to 127.0.0.1 now."""
    with receiver() as rec:

        def rebinding(host: str, port: int) -> list[str]:
            return ["127.0.0.1"]

        url = f"http://public.example:{rec.port}/hook"
        refused = sender.send(url, b"{}", {}, resolve=rebinding)
        assert not refused.ok and refused.error and "loopback" in refused.error and refused.retry is False
        assert rec.requests == []  # nothing reached the receiver
        allowed = sender.send(url, b"{}", {}, allow=LOOPBACK, resolve=rebinding)
        assert allowed.ok and allowed.status_code == 200 and len(rec.requests) == 1
        assert rec.requests[0].headers["Host"] == f"public.example:{rec.port}"


# IPv6 forms that carry an IPv4 address, each leading to a non-public one (RFC 6052, 3056, 4380,
# 4291): judged by the IPv4 address, at submit time and at delivery time.
EMBEDDED_NON_PUBLIC = {
    "::ffff:127.0.0.1": "loopback",  # IPv4-mapped
    "::ffff:a9fe:a9fe": "link-local",  # IPv4-mapped metadata address
    "64:ff9b::7f00:1": "loopback",  # NAT64 well-known prefix
    "64:ff9b::a9fe:a9fe": "link-local",  # NAT64 of the metadata address
    "64:ff9b::a00:1": "private",  # NAT64 of 10.0.0.1
    "64:ff9b:1::c0a8:101": "private",  # NAT64 local-use prefix, 192.168.1.1
    "2002:7f00:1::": "loopback",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1": "link-local",  # 6to4 of the metadata address
    "2002:e000:1::": "multicast",  # 6to4 of 224.0.0.1
    "2002::": "unspecified",  # 6to4 of 0.0.0.0
    "2002:6440:1::": "not a public address",  # 6to4 of 100.64.0.1 (shared address space)
    "::127.0.0.1": "loopback",  # IPv4-compatible
    "::10.1.2.3": "private",  # IPv4-compatible
    "2001:0:4136:e378:8000:63bf:80ff:fffe": "loopback",  # Teredo, client 127.0.0.1 (inverted bits)
    "2001:0:4136:e378:8000:63bf:5601:5601": "link-local",  # Teredo, client 169.254.169.254
    "2001:0:a00:1:8000:63bf:f7f7:f7f7": "private",  # Teredo, server 10.0.0.1 (client 8.8.8.8)
}
# The same forms leading to a public address are public (the IPv4 rules decide, not the wrapper).
EMBEDDED_PUBLIC = [
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
    "::8.8.8.8",
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # server 65.54.227.120, client 8.8.8.8
]


@pytest.mark.parametrize(("address", "kind"), EMBEDDED_NON_PUBLIC.items())
def test_ipv6_forms_carrying_a_non_public_ipv4_address_are_refused(address: str, kind: str) -> None:
    why = urls.address_refusal(address, "hooks.example", ())
    assert why is not None and kind in why
    assert urls.address_refusal(address, "hooks.example", ("hooks.example",)) is None  # by name


def test_the_embedded_address_is_what_the_rules_and_the_allow_list_see() -> None:
    for address in EMBEDDED_PUBLIC:
        assert urls.address_refusal(address, "x", ()) is None, address
    assert urls.embedded(urls._ip("2001:0:4136:e378:8000:63bf:80ff:fffe")) == (  # type: ignore[arg-type]
        ("Teredo server", urls.ipaddress.IPv4Address("65.54.227.120")),
        ("Teredo client", urls.ipaddress.IPv4Address("127.0.0.1")),
    )
    # An allowed range opens the IPv4 address under any wrapper, and the IPv6 range itself.
    assert urls.address_refusal("2002:7f00:1::", "x", ("127.0.0.0/8",)) is None
    assert urls.address_refusal("2002:7f00:1::", "x", ("2002::/16",)) is None
    assert urls.address_refusal("2002:a00:1::", "x", ("127.0.0.0/8",)) is not None
    # A local-use NAT64 prefix may be of any length: a public-looking last 32 bits prove nothing.
    assert "local-use NAT64" in (urls.address_refusal("64:ff9b:1::808:808", "x", ()) or "")
    # ::1 and :: stay IPv6's own loopback and unspecified addresses.
    assert "loopback" in (urls.address_refusal("::1", "x", ()) or "")


@pytest.mark.parametrize("address", EMBEDDED_NON_PUBLIC)
def test_embedded_forms_are_refused_at_submit_time(address: str) -> None:
    def resolver(host: str, port: int) -> list[str]:
        return ["8.8.8.8", address]  # one bad address is enough

    with pytest.raises(urls.RefusedUrl, match=EMBEDDED_NON_PUBLIC[address]):
        urls.check_url("http://hooks.example/x", (), resolve=resolver)
    with pytest.raises(urls.RefusedUrl, match=EMBEDDED_NON_PUBLIC[address]):
        urls.check_url(f"http://[{address}]:8080/x", ())  # a literal is never looked up


@pytest.fixture
def no_connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Every connection the sender tries is recorded and fails at once: nothing leaves."""
    tried: list[tuple[Any, ...]] = []

    def refuse(address: Any, *args: Any, **kwargs: Any) -> Any:
        tried.append(address)
        raise ConnectionRefusedError("no connection in this test")

    monkeypatch.setattr(sender.socket, "create_connection", refuse)
    return tried


@pytest.mark.parametrize("address", EMBEDDED_NON_PUBLIC)
def test_embedded_forms_are_refused_at_delivery_time_before_connecting(
    address: str, no_connections: list[tuple[Any, ...]]
) -> None:
    """DNS rebinding to a wrapped address: the name resolves to it only when the worker delivers."""

    def rebinding(host: str, port: int) -> list[str]:
        return [address]

    result = sender.send("http://public.example/hook", b"{}", {}, resolve=rebinding)
    assert not result.ok and result.retry is False
    assert result.error and result.error.startswith("refused:") and EMBEDDED_NON_PUBLIC[address] in result.error
    assert no_connections == []


@pytest.mark.parametrize("address", ["2002:7f00:1::", "64:ff9b::a9fe:a9fe", "::ffff:10.0.0.1",
                                     "2001:0:4136:e378:8000:63bf:80ff:fffe"])
def test_the_address_actually_connected_is_judged_by_its_embedded_address(
    address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name resolves to a public address, but the socket ends up connected to a wrapped
    non-public one (a translator on the path): refused after connecting, before a byte is sent.
    The socket really connects to the loopback receiver; only the peer it reports is the form."""
    connected: list[Any] = []

    class Reported(socket.socket):
        def getpeername(self) -> Any:
            return (address, 80, 0, 0)

    with receiver() as rec:

        def connect(target: Any, timeout: float | None = None, *args: Any, **kwargs: Any) -> socket.socket:
            connected.append(target)
            sock = Reported(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(("127.0.0.1", rec.port))  # never the resolved address
            return sock

        monkeypatch.setattr(sender.socket, "create_connection", connect)
        result = sender.send("http://public.example/hook", b"{}", {}, resolve=lambda h, p: ["8.8.8.8"])
        assert not result.ok and result.retry is False and result.error and "refused:" in result.error
        assert str(urls.ipaddress.ip_address(address)) in result.error  # the peer's address is the one judged
        assert connected == [("8.8.8.8", 80)] and rec.requests == []


def test_an_ipv4_mapped_connection_is_judged_as_its_ipv4_address() -> None:
    """A real connection over IPv6 to ::ffff:127.0.0.1 (loopback): the peer the socket reports
    is the mapped form, refused as loopback, and opened by an allow-list of 127.0.0.1."""
    with receiver() as rec:

        def mapped(host: str, port: int) -> list[str]:
            return ["::ffff:127.0.0.1"]

        url = f"http://public.example:{rec.port}/hook"
        refused = sender.send(url, b"{}", {}, resolve=mapped)
        assert not refused.ok and refused.error and "IPv4-mapped for 127.0.0.1" in refused.error
        assert rec.requests == []
        allowed = sender.send(url, b"{}", {}, allow=LOOPBACK, resolve=mapped)
        assert allowed.ok and allowed.status_code == 200 and len(rec.requests) == 1


def test_redirects_are_not_followed() -> None:
    with receiver(statuses=[302]) as rec:
        result = sender.send(rec.url(), b"{}", {}, allow=LOOPBACK)
        assert not result.ok and result.status_code == 302 and "redirect" in (result.error or "")
        assert len(rec.requests) == 1


def test_callback_url_on_execute_is_checked_and_scheduled_with_the_run(live: LiveApp) -> None:
    sid = live.session()["session_id"]
    before = live.rows.snapshot()
    err = expect_error(
        live.client.post(execute_url(sid), json={"callback_url": "http://localhost:9/x"}), 400, "INVALID_CALLBACK_URL"
    )
    assert "loopback" in err["message"]
    expect_error(live.client.post(execute_url(sid), json={"callback_url": "gopher://x"}), 400, "INVALID_CALLBACK_URL")
    assert live.rows.snapshot() == before and live.enqueued.ids == []


@pytest.mark.parametrize("address", ["2002:7f00:1::", "64:ff9b::a9fe:a9fe", "::ffff:10.0.0.1", "::127.0.0.1",
                                     "2001:0:4136:e378:8000:63bf:80ff:fffe", "64:ff9b:1::a00:1"])
def test_a_wrapped_non_public_callback_is_a_400_and_a_judge0_422(live: LiveApp, address: str) -> None:
    sid = live.session()["session_id"]
    before = live.rows.snapshot()
    err = expect_error(
        live.client.post(execute_url(sid), json={"callback_url": f"http://[{address}]:8080/x"}),
        400,
        "INVALID_CALLBACK_URL",
    )
    assert EMBEDDED_NON_PUBLIC.get(address, "private") in err["message"]
    j0 = live.client.post(
        "/judge0/submissions",
        json={"source_code": "print(1)", "language_id": 71, "callback_url": f"http://[{address}]/x"},
    )
    assert j0.status_code == 422 and "callback_url" in j0.get_json()
    assert live.rows.snapshot() == before and live.enqueued.ids == []


def test_the_claim_says_whether_the_run_has_callbacks(make_live: Any) -> None:
    # The worker wakes its webhook thread (a query for due deliveries) only for runs that have one.
    from livecode.services.executions import claim_execution

    live = make_live(webhook_allow=LOOPBACK)
    with receiver() as rec:
        hooked = live.execute(live.session()["session_id"], {"callback_url": rec.url()})["execution_id"]
    plain = live.execute(live.session()["session_id"])["execution_id"]
    claims = {eid: claim_execution(live.db, uuid.UUID(eid), "w@test") for eid in (hooked, plain)}
    assert {eid: c.has_webhooks for eid, c in claims.items() if c is not None} == {hooked: True, plain: False}


def test_a_delivery_is_signed_retried_after_a_500_and_listed(make_live: Any) -> None:
    live = make_live(webhook_allow=LOOPBACK, webhook_backoff_s=0.01)
    secret = live.client.post("/api/v1/webhooks/secret").get_json()["secret"]
    assert live.client.get("/api/v1/webhooks/secret").get_json()["exists"] is True
    sid = live.session("print(1)")["session_id"]
    with receiver(statuses=[500]) as rec:
        eid = live.execute(sid, {"callback_url": rec.url()})["execution_id"]
        listed = live.client.get(f"/api/v1/executions/{eid}/deliveries").get_json()["deliveries"]
        assert [(d["state"], d["attempts"]) for d in listed] == [("pending", 0)]
        assert deliver_due(live.db, live.settings) == 0  # not terminal yet: not due
        finish_like_a_worker(live, eid, stdout=b"1\n")
        assert deliver_due(live.db, live.settings) == 1  # the 500
        import time

        time.sleep(0.05)
        assert deliver_due(live.db, live.settings) == 1  # the retry, after the backoff
        got = rec.wait_for(2)
    body = got[1].body
    ts = int(got[1].headers["X-LiveCode-Timestamp"])
    assert signing.verify(secret, ts, body, got[1].headers["X-LiveCode-Signature"])
    assert not signing.verify("whsec_wrong", ts, body, got[1].headers["X-LiveCode-Signature"])
    payload = json.loads(body)
    assert payload["event"] == "execution.finished" and payload["execution"]["execution_id"] == eid
    assert payload["execution"]["stdout"] == "1\n" and got[1].method == "POST"
    listed = live.client.get(f"/api/v1/executions/{eid}/deliveries").get_json()["deliveries"]
    assert listed[0]["state"] == "delivered" and [t["status_code"] for t in listed[0]["tries"]] == [500, 200]


def test_retries_stop_after_the_configured_tries(make_live: Any) -> None:
    live = make_live(webhook_allow=LOOPBACK, webhook_backoff_s=0.001, webhook_max_attempts=3)
    sid = live.session()["session_id"]
    with receiver(statuses=[500] * 10) as rec:
        eid = live.execute(sid, {"callback_url": rec.url()})["execution_id"]
        finish_like_a_worker(live, eid)
        import time

        for _ in range(10):
            deliver_due(live.db, live.settings)
            time.sleep(0.02)
        assert len(rec.requests) == 3
    row = live.client.get(f"/api/v1/executions/{eid}/deliveries").get_json()["deliveries"][0]
    assert (row["state"], row["attempts"]) == ("failed", 3)


def test_batches_api_key_defaults_and_judge0_callbacks(make_live: Any) -> None:
    live = make_live(webhook_allow=LOOPBACK, auth_required=True)
    user = sign_up(live)
    with receiver() as rec:
        key = live.client.post(
            "/api/v1/api-keys", json={"callback_url": rec.url("/default")}, headers=user.headers
        ).get_json()["key"]
        bad = live.client.post("/api/v1/api-keys", json={"callback_url": "ftp://x"}, headers=user.headers)
        expect_error(bad, 400, "INVALID_CALLBACK_URL")
        by_key = {"X-API-Key": key}
        sid = live.session(headers=by_key)["session_id"]
        keyed = live.execute(sid, headers=by_key)["execution_id"]
        batch = live.client.post(
            "/api/v1/executions/batch",
            headers=by_key,
            json={"callback_url": rec.url("/batch"), "executions": [{"session_id": sid}, {"session_id": sid}]},
        )
        assert batch.status_code == 202, batch.get_json()
        j0 = live.client.post(
            "/judge0/submissions",
            headers={"X-Auth-Token": key},
            json={"source_code": "print(1)", "language_id": 71, "callback_url": rec.url("/j0")},
        )
        token = j0.get_json()["token"]
        ids = [keyed, *(e["execution_id"] for e in batch.get_json()["executions"]), token]
        for eid in ids:
            finish_like_a_worker(live, eid, stdout=b"1\n")
        assert deliver_due(live.db, live.settings) == 4
        got = rec.wait_for(4)
    by_path = {r.path: r for r in got}
    assert sorted(r.path for r in got) == ["/batch", "/batch", "/default", "/j0"]
    judge0 = by_path["/j0"]
    assert judge0.method == "PUT"
    body = json.loads(judge0.body)
    assert body["token"] == token and base64.b64decode(body["stdout"]) == b"1\n" and body["status"]["id"] == 3
    assert set(body) == {"token", "time", "memory", "stdout", "stderr", "compile_output", "message", "status"}
    assert live.rows.one("webhook_deliveries", "execution_id = :e", e=uid(token))["max_attempts"] == 3
    # Another user cannot read these deliveries.
    other = sign_up(live)
    assert live.client.get(f"/api/v1/executions/{keyed}/deliveries", headers=other.headers).status_code == 404
    assert live.client.get(f"/api/v1/executions/{uuid.uuid4()}/deliveries", headers=user.headers).status_code == 404


def test_webhook_secrets_and_judge0_tokens_are_redacted_from_log_lines() -> None:
    from livecode.logging_setup import redact

    line = "X-Auth-Token: lc_" + "k" * 40 + " secret=whsec_" + "s" * 40
    assert "k" * 40 not in redact(line) and "s" * 40 not in redact(line)


def test_members_see_the_deliveries_and_judge0_submissions_of_the_runs_they_see(make_live: Any) -> None:
    """The one membership rule (services/access.py): a member (viewer or editor) of a session
    sees its executions, so their deliveries and Judge0 submissions too; a callback URL shows
    only its origin to them (its path and query may hold the owner's token), and no delivery
    holds the signing secret. A stranger still gets 404; a member cannot delete."""
    from tests.support.procs import free_port

    live = make_live(webhook_allow=LOOPBACK, webhook_backoff_s=0.001, webhook_max_attempts=1, auth_required=True)
    owner, viewer, stranger = sign_up(live), sign_up(live), sign_up(live)
    secret = live.client.post("/api/v1/webhooks/secret", headers=owner.headers).get_json()["secret"]
    dead = f"http://127.0.0.1:{free_port()}/hooks/T0KEN-path?key=s3cret-q"  # nothing listens: an error
    sid = live.session(headers=owner.headers)["session_id"]
    eid = live.execute(sid, {"callback_url": dead}, headers=owner.headers)["execution_id"]
    finish_like_a_worker(live, eid, stdout=b"1\n")
    deliver_due(live.db, live.settings)
    j0 = live.client.post(
        "/judge0/submissions", headers=owner.headers,
        json={"source_code": "print(1)", "language_id": 71, "callback_url": dead},
    ).get_json()["token"]
    j0_sid = live.client.get(f"/api/v1/executions/{j0}", headers=owner.headers).get_json()["session_id"]
    for shared in (sid, j0_sid):
        r = live.client.post(f"/api/v1/code-sessions/{shared}/members", headers=owner.headers,
                             json={"username": viewer.username, "role": "viewer"})
        assert r.status_code == 201, r.get_json()

    mine = live.client.get(f"/api/v1/executions/{eid}/deliveries", headers=owner.headers).get_json()["deliveries"]
    # An error that quotes the request line is scrubbed for members as the URL is.
    assert urls.scrub("Max retries exceeded with url: /hooks/T0KEN-path?key=s3cret-q (refused)", dead) == (
        "Max retries exceeded with url: … (refused)"
    )
    assert mine[0]["url"] == dead and mine[0]["state"] == "failed" and mine[0]["tries"][0]["error"]
    seen = live.client.get(f"/api/v1/executions/{eid}/deliveries", headers=viewer.headers)
    assert seen.status_code == 200
    [delivery] = seen.get_json()["deliveries"]
    assert delivery["url"] == dead.split("/hooks")[0]
    assert (delivery["state"], delivery["attempts"]) == ("failed", 1) and delivery["tries"][0]["error"]
    text = json.dumps(seen.get_json())
    assert "T0KEN" not in text and "s3cret" not in text and secret not in text
    expect_error(live.client.get(f"/api/v1/executions/{eid}/deliveries", headers=stranger.headers), 404,
                 "EXECUTION_NOT_FOUND")

    got = live.client.get(f"/judge0/submissions/{j0}?fields=token,callback_url,status", headers=viewer.headers)
    assert got.status_code == 200, got.get_json()
    assert got.get_json()["token"] == j0 and got.get_json()["callback_url"] == dead.split("/hooks")[0]
    own = live.client.get(f"/judge0/submissions/{j0}?fields=callback_url", headers=owner.headers).get_json()
    assert own["callback_url"] == dead
    batch = live.client.get(f"/judge0/submissions/batch?tokens={j0}&fields=token", headers=viewer.headers)
    assert batch.get_json()["submissions"] == [{"token": j0}]
    assert live.client.get(f"/judge0/submissions/{j0}", headers=stranger.headers).status_code == 404
    # Their own list is theirs: a shared submission is not in the viewer's pages.
    assert live.client.get("/judge0/submissions", headers=viewer.headers).get_json()["submissions"] == []
    finish_like_a_worker(live, j0, stdout=b"1\n")
    assert live.client.delete(f"/judge0/submissions/{j0}", headers=viewer.headers).status_code == 403
    assert live.client.get(f"/judge0/submissions/{j0}", headers=owner.headers).status_code == 200
