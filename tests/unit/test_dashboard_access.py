"""Who may read the dashboard (rayipy.dashboard.server.Access): pure rules, no sockets."""

from __future__ import annotations

from rayipy.dashboard.server import TOKEN_COOKIE, Access, is_loopback


def test_loopback_needs_no_token_beyond_it_one_is_made():
    assert Access.for_bind("127.0.0.1", "127.0.0.1").token == ""
    assert Access.for_bind("::1", "::1").token == ""
    made = Access.for_bind("0.0.0.0", "10.1.2.3")
    again = Access.for_bind("0.0.0.0", "10.1.2.3")
    assert len(made.token) >= 32 and made.token != again.token   # random each start
    assert Access.for_bind("10.1.2.3", "10.1.2.3", token="given").token == "given"


def test_host_header_must_name_the_server_or_localhost():
    access = Access.for_bind("127.0.0.1", "127.0.0.1")
    for ok in ("127.0.0.1:8265", "localhost:8265", "LOCALHOST", "[::1]:8265", "localhost."):
        assert access.host_allowed(ok), ok
    # DNS rebinding: another site's name pointed at 127.0.0.1 sends that name.
    for bad in ("evil.example:8265", "evil.example", "127.0.0.1.evil.example", "", None,
                "10.1.2.3:8265"):
        assert not access.host_allowed(bad), bad
    wide = Access.for_bind("10.1.2.3", "10.1.2.3")
    assert wide.host_allowed("10.1.2.3:8265") and not wide.host_allowed("attacker.example")


def test_token_from_query_cookie_or_bearer_header():
    access = Access.for_bind("10.1.2.3", "10.1.2.3", token="t0k")
    assert access.token_given({"token": ["t0k"]}, None, None) == "t0k"
    assert access.token_given({}, f"a=b; {TOKEN_COOKIE}_9=t0k", None, f"{TOKEN_COOKIE}_9") == "t0k"
    assert access.token_given({}, f"{TOKEN_COOKIE}_8=t0k", None, f"{TOKEN_COOKIE}_9") == ""
    assert access.token_given({}, None, "Bearer t0k") == "t0k"
    assert access.token_ok("t0k") and not access.token_ok("") and not access.token_ok("t0")
    assert Access.for_bind("127.0.0.1", "127.0.0.1").token_ok("")


def test_is_loopback():
    assert all(map(is_loopback, ["127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "", "10.0.0.1", "::", "example.com"]))


def test_names_a_proxy_forwards_can_be_allowed(monkeypatch):
    monkeypatch.setenv("RAYIPY_DASHBOARD_HOSTS", "hub.example.org, lab.example.org")
    access = Access.for_bind("127.0.0.1", "127.0.0.1")
    assert access.host_allowed("hub.example.org") and access.host_allowed("lab.example.org:443")
    assert not access.host_allowed("evil.example") and not access.host_allowed("")
