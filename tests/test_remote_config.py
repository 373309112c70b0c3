"""The remote engine's configuration: profiles' [remote], the key file, TLS, the command line."""

from __future__ import annotations

import datetime
import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from board import profiles
from runtime.engine.errors import EngineUsageError
from runtime.engine.remote import RemoteConfig, RemoteError, RemoteLlm, Router
from runtime.engine.remote.client import read_key
from runtime.errors import ProfileError
from runtime.profile import parse_profile
from runtime.sched.clock import VirtualClock

SIM = Path(profiles.find("sim").source).read_text()


def test_a_profile_may_name_a_remote_and_its_budgets() -> None:
    p = parse_profile(
        SIM + '\n[remote]\nendpoint = "https://llm.example/v1"\nmodel = "qwen-glasses"\n'
        'key_file = "/etc/ocula/remote.key"\nfirst_token_s = 0.8\nprefer = "auto"\n'
    )
    assert p.remote is not None
    assert (p.remote.endpoint, p.remote.model, p.remote.first_token_s) == (
        "https://llm.example/v1",
        "qwen-glasses",
        0.8,
    )
    assert p.remote.stall_s == 2.0 and p.remote.prefer == "auto"
    assert parse_profile(SIM).remote is None


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ('[remote]\nmodel = "q"\n', "missing key 'endpoint' in [remote]"),
        ('[remote]\nendpoint = "https://x/v1"\nstall_s = 0\n', "remote.stall_s: 0"),
        (
            '[remote]\nendpoint = "https://x/v1"\nprefer = "cloud"\n',
            "expected one of: remote, local, auto",
        ),
        ('[remote]\nendpoint = "https://x/v1"\napi_key = "sk-1"\n', "unknown key 'api_key'"),
    ],
)
def test_a_bad_remote_section_is_refused_by_name(extra: str, words: str) -> None:
    with pytest.raises(ProfileError, match=words.replace("[", r"\[").replace("]", r"\]")):
        parse_profile(SIM + "\n" + extra)


def test_the_key_is_read_from_a_file_and_never_shown(tmp_path: Path) -> None:
    f = tmp_path / "key"
    f.write_text("sk-secret-123\n")
    key = read_key(f)
    cfg = RemoteConfig("https://llm.example/v1", api_key=key)
    assert key == "sk-secret-123" and "sk-secret" not in repr(cfg) and "api_key=set" in repr(cfg)
    assert RemoteLlm(cfg).headers()["Authorization"] == "Bearer sk-secret-123"
    for content, words in ((b"", "is empty"), (b"x" * 5000, "over 4096 bytes")):
        f.write_bytes(content)
        with pytest.raises(RemoteError, match=words):
            read_key(f)
    with pytest.raises(RemoteError, match="cannot read the remote API key"):
        read_key(tmp_path / "missing")


@pytest.mark.parametrize("url", ["ftp://x/v1", "llm.example/v1", "https:///v1"])
def test_an_endpoint_must_be_an_http_url(url: str) -> None:
    with pytest.raises(EngineUsageError, match="is not an http"):
        RemoteConfig(url)


def test_a_router_needs_something_to_answer_with() -> None:
    with pytest.raises(RemoteError, match="needs a remote endpoint, a local model"):
        Router(None, None, VirtualClock())


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """An HTTPS server on loopback with a certificate signed by a CA made here; it streams a
    two-piece answer. Yields (base URL, the CA's certificate file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ocula test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for piece in ("Bonjour", " !"):
                event = {"choices": [{"delta": {"content": piece}, "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://localhost:{server.server_address[1]}/v1", d / "ca.pem"
    server.shutdown()
    server.server_close()


def _answer(cfg: RemoteConfig) -> tuple[str, str]:
    clock = VirtualClock()
    router = Router(RemoteLlm(cfg, clock), None, clock)
    answer = router.start([{"role": "user", "content": "Hello"}], max_tokens=4)
    for _ in range(100000):
        if answer.done:
            break
        answer.step()
    return answer.text, answer.switch_reason


def test_tls_checks_the_servers_certificate(tls_server: tuple[str, Path]) -> None:
    url, ca = tls_server
    text, why = _answer(RemoteConfig(url))  # the system's CAs do not know this one
    assert text == "" and "TLS certificate did not verify" in why and "remote.ca_file" in why
    text, why = _answer(RemoteConfig(url, ca_file=str(ca)))
    assert (text, why) == ("Bonjour !", "")


def test_ocula_run_refuses_a_remote_that_is_not_a_url(ocula, tmp_path: Path) -> None:
    r = ocula(
        "run", "translate", "--port", "local", "--models", str(tmp_path), "--remote", "llm:8080"
    )
    lines = r.err.strip().splitlines()
    assert r.code == 2 and len(lines) == 1 and lines[0].startswith("ocula: error:")
    assert "--remote" in lines[0] and "llm:8080: give the API's base URL" in lines[0]
    assert "Traceback" not in r.err
