"""SSRF: url sources and callbacks cannot reach loopback, private or metadata addresses.

In-process: the address policy, DNS rebinding (the checked IP is the one connected to) and
redirect hops. Against a live server with the default policy: every refused or failed fetch
reads the same, so the server cannot be used as a port scanner.

127.0.0.2 stands for a public host here: the live server allows exactly 127.0.0.2/32, and
everything else on 127/8 stays refused, as loopback is by default.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json

import httpx
import pytest
import websockets

from server.audio.fetch import fetch_url
from server.errors import InvalidRequest, RemoteContentError
from server.outbound import AddressPolicy, Outbound, Refused
from tests import corpus
from tests.conftest import free_port
from tests.test_rest_support import assert_deepgram_error, local_host

PUBLIC = "127.0.0.2"  # allowed by the policies below, as a public address would be
AUDIO = b"RIFF-not-really-audio"


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.100.100.200",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fd00:ec2::254",
        "::ffff:127.0.0.1",
        "64:ff9b::7f00:1",
        "2002:7f00:1::1",
    ],
)
def test_default_policy_refuses(address):
    assert not AddressPolicy().allows(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "2001:4860:4860::8888", "::ffff:8.8.8.8"])
def test_default_policy_allows_public(address):
    assert AddressPolicy().allows(ipaddress.ip_address(address))


def test_allow_private_still_refuses_metadata_unless_listed():
    lan = AddressPolicy(allow_private=True)
    assert lan.allows(ipaddress.ip_address("10.0.0.7"))
    assert not lan.allows(ipaddress.ip_address("169.254.169.254"))
    listed = AddressPolicy.of(False, ["169.254.169.254/32"])
    assert listed.allows(ipaddress.ip_address("169.254.169.254"))
    assert not listed.allows(ipaddress.ip_address("10.0.0.7"))


def _outbound(answers: list[list[str]], calls: list[str]) -> Outbound:
    """A resolver that gives each answer in turn (the last one forever): a rebinding DNS."""

    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return answers[min(len(calls), len(answers)) - 1]

    return Outbound(AddressPolicy.of(False, [f"{PUBLIC}/32"]), resolve)


def test_rebinding_dns_cannot_redirect_the_connection():
    """First answer public, every later one loopback: the fetch connects to the checked IP."""
    port = free_port()
    with (
        local_host({"/a.wav": AUDIO}, bind=PUBLIC, port=port) as public,
        local_host({"/a.wav": b"SECRET"}, bind="127.0.0.1", port=port) as secret,
    ):
        calls: list[str] = []
        outbound = _outbound([[PUBLIC], ["127.0.0.1"]], calls)
        payload = asyncio.run(
            fetch_url(
                f"http://rebind.test:{port}/a.wav", outbound=outbound, timeout_s=5, limit=1000
            )
        )
        with payload:
            assert payload.file.read() == AUDIO
        assert calls == ["rebind.test"], "resolved once per hop"
        assert public.fetched == ["/a.wav"] and secret.fetched == []


def test_a_name_with_any_refused_address_is_refused():
    calls: list[str] = []
    outbound = _outbound([[PUBLIC, "127.0.0.1"]], calls)
    with pytest.raises(Refused, match="refused address"):
        asyncio.run(outbound.check("http://mixed.test/x.wav"))


def test_every_redirect_hop_is_checked():
    with local_host({"/secret.wav": b"SECRET"}) as secret:
        with local_host(redirects={"/go": f"{secret.url}/secret.wav"}, bind=PUBLIC) as public:
            outbound = Outbound(AddressPolicy.of(False, [f"{PUBLIC}/32"]))
            with pytest.raises(RemoteContentError):
                asyncio.run(
                    fetch_url(f"{public.url}/go", outbound=outbound, timeout_s=5, limit=1000)
                )
        assert public.fetched == ["/go"]
        assert secret.fetched == [], "the redirect target on loopback was never contacted"


@pytest.fixture(scope="module")
def guarded(server_factory):
    """Defaults but for one 'public' address, 127.0.0.2."""
    if not corpus.clips():
        pytest.skip(corpus.MISSING)
    return server_factory(
        env={"OPENLISTEN_OUTBOUND_ALLOW_NETWORKS": f"{PUBLIC}/32", "OPENLISTEN_URL_TIMEOUT_S": "2"}
    )


def test_refused_and_failed_fetches_read_the_same(guarded):
    clip = corpus.by_name("en_timit_LDC93S1.wav").path.read_bytes()
    with (
        local_host({"/ok.wav": clip}) as loopback,
        local_host(
            {"/ok.wav": clip}, bind=PUBLIC, redirects={"/go": f"{loopback.url}/ok.wav"}
        ) as public,
    ):
        port = loopback.url.rsplit(":", 1)[1]
        urls = {
            "loopback": f"{loopback.url}/ok.wav",
            "localhost": f"http://localhost:{port}/ok.wav",
            "decimal ip": f"http://2130706433:{port}/ok.wav",
            "ipv6 loopback": f"http://[::1]:{port}/ok.wav",
            "mapped ipv6": f"http://[::ffff:127.0.0.1]:{port}/ok.wav",
            "metadata": "http://169.254.169.254/latest/meta-data/",
            "redirect to loopback": f"{public.url}/go",
            "404": f"{public.url}/missing.wav",
            "closed port": f"http://{PUBLIC}:{free_port()}/ok.wav",
            "stalls": f"{public.url}/stall",
        }
        messages = {}
        for name, url in urls.items():
            reply = httpx.post(f"{guarded.url}/v1/listen", json={"url": url}, timeout=30)
            body = assert_deepgram_error(reply, 400)
            assert body["err_code"] == "REMOTE_CONTENT_ERROR", (name, body)
            messages[name] = body["err_msg"]
        assert loopback.fetched == [], "nothing on loopback was ever contacted"
        assert len(set(messages.values())) == 1, messages
        # And the allowed host still works.
        ok = httpx.post(
            f"{guarded.url}/v1/listen", json={"url": f"{public.url}/ok.wav"}, timeout=60
        )
        assert ok.status_code == 200, ok.text
    log = guarded.logs()
    assert "url fetch refused" in log
    assert "ok.wav" not in log and "meta-data" not in log, "logs name hosts, never paths"


@pytest.mark.parametrize(
    "callback", ["http://127.0.0.1:9/hook", "http://[::1]/hook", "http://169.254.169.254/"]
)
def test_callback_to_a_private_address_is_refused_before_the_job(guarded, callback):
    clip = corpus.by_name("en_timit_LDC93S1.wav").path.read_bytes()
    reply = httpx.post(
        f"{guarded.url}/v1/listen", params={"callback": callback}, content=clip, timeout=30
    )
    body = assert_deepgram_error(reply, 400)
    assert body["err_code"] == "INVALID_QUERY_PARAMETER"
    assert "callback" in body["err_msg"]


MALFORMED = [
    "http://[::1",  # urlsplit: Invalid IPv6 URL
    "http://[zz]/a.wav",  # urlsplit: not an address in brackets
    "http://host:port/a.wav",  # not a number
    "http://127.0.0.2:99999/a.wav",  # out of range
    "http://127.0.0.2/a\x00b.wav",  # httpx refuses it only once the request is built
    "http://127.0.0.2/a\nb.wav",
]


@pytest.mark.parametrize("url", MALFORMED)
def test_malformed_urls_are_refused_before_any_request(url):
    """Each raised ValueError or httpx.InvalidURL from deep inside a fetch once (a 500, and a
    callback job that failed the same way every 5 s, forever)."""
    with pytest.raises(Refused, match="malformed"):
        asyncio.run(Outbound(AddressPolicy.of(False, [f"{PUBLIC}/32"])).check(url))
    with pytest.raises(InvalidRequest, match="well-formed"):
        asyncio.run(fetch_url(url, outbound=Outbound(), timeout_s=5, limit=1000))


def test_malformed_urls_are_400s_on_every_route(guarded):
    clip = corpus.by_name("en_timit_LDC93S1.wav").path.read_bytes()
    for url in MALFORMED:
        for reply in (
            httpx.post(f"{guarded.url}/v1/listen", json={"url": url}, timeout=30),
            httpx.post(f"{guarded.url}/v1/listen/url", params={"url": url}, timeout=30),
        ):
            body = assert_deepgram_error(reply, 400)
            assert "well-formed" in body["err_msg"], (url, body)
        reply = httpx.post(
            f"{guarded.url}/v1/listen", params={"callback": url}, content=clip, timeout=30
        )
        body = assert_deepgram_error(reply, 400)
        assert body["err_code"] == "INVALID_QUERY_PARAMETER", (url, body)
        status, refusal = _ws_refusal(f"{guarded.ws_url}/v1/listen", {"callback": url})
        assert status == 400 and refusal["err_code"] == "INVALID_QUERY_PARAMETER", (url, refusal)
    assert "Traceback" not in guarded.logs()


def _ws_refusal(url: str, params: dict[str, str]) -> tuple[int, dict]:
    async def go() -> tuple[int, dict]:
        try:
            async with websockets.connect(str(httpx.URL(url, params=params)), open_timeout=20):
                pass
        except websockets.InvalidStatus as exc:
            return exc.response.status_code, json.loads(exc.response.body)
        raise AssertionError("the handshake was accepted")

    return asyncio.run(go())
