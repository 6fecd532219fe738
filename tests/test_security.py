"""Security properties: SSRF (hosts, DNS, redirects), hostile bodies, webhook auth, secrets.

Proved elsewhere, not repeated here:

* users reach others' requests and images through the API only with Django's permissions:
  ``test_api.py::test_permission_matrix``;
* admin actions need the permission:
  ``test_admin.py::test_without_the_permission_posts_are_refused``
  and ``::test_without_the_permission_actions_and_buttons_are_hidden``;
* private IP literals and the metadata address are refused:
  ``test_downloads.py::test_unlisted_private_ip_literal_is_refused``;
* redirects are re-checked: ``test_downloads.py::test_redirect_to_*``;
* a forged webhook success is confirmed through the API before anything is stored:
  ``test_webhooks.py::test_forged_success_is_not_trusted``;
* no API key reaches a log, page, response or stored JSON: ``tests/sentinel.py`` runs the
  whole suite with a sentinel key.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus, urlsplit

import httpx
import pytest
from django.conf import settings as django_settings
from django.urls import reverse
from django.utils import timezone

from django_modelslab import pipeline
from django_modelslab.client import MAX_TEXT
from django_modelslab.conf import DEFAULT_ALLOWED_DOWNLOAD_HOSTS
from django_modelslab.downloads import PinnedTransport, download, make_client
from django_modelslab.exceptions import DownloadError, DownloadRefused, ReservedParameters
from django_modelslab.models import GenerationRequest, WebhookDelivery

from .conftest import TEST_API_KEY
from .helpers import configure, noise_png, raw_png, run_new

Status = GenerationRequest.Status
LIMITS = {"max_bytes": 1024 * 1024, "timeout": 2.0, "connect_timeout": 1.0}


def _bomb(side: int = 8_000) -> bytes:
    """A valid 1-bit PNG of ``side``² pixels (64 M, over MAX_IMAGE_PIXELS) in about 10 KB."""
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    rows = zlib.compressobj(9)
    row = b"\0" * (1 + side // 8)
    data = b"".join(rows.compress(row) for _ in range(side)) + rows.flush()
    return raw_png(header, data)


PNG = noise_png(32)
BOMB = _bomb()
NO_ANSWER = (404, b"Not Found", "text/plain")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.server.paths.append(parts.path)  # type: ignore[attr-defined]
        if parts.path == "/redirect":
            self._send(302, b"", "text/plain", Location=query["to"])
        elif parts.path == "/png":
            self._send(200, PNG, query.get("type", "image/png"))
        elif parts.path == "/bomb.png":
            self._send(200, BOMB, "image/png")
        else:
            self._send(404, b"Not Found", "text/plain")

    def do_POST(self) -> None:
        """A ModelsLab stand-in: every call gets ``server.answer`` (status, body, type)."""
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._send(*self.server.answer)  # type: ignore[attr-defined]

    def _send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def local() -> Iterator[ThreadingHTTPServer]:
    """A local image host on 127.0.0.1 (``server.port``; ``server.paths`` it was asked for)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.paths = []  # type: ignore[attr-defined]
    server.answer = NO_ANSWER  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def port(server: ThreadingHTTPServer) -> int:
    return server.server_address[1]


@pytest.fixture
def dns(monkeypatch) -> dict[str, list[str]]:
    """Names the resolver answers with chosen addresses (others resolve as usual).

    The system resolver knows none of these names, so a download that succeeds through one
    has connected to the very address the check saw. ``dns["_lookups"]`` counts lookups.
    """
    answers: dict[str, list[str]] = {"_lookups": []}
    real: Callable = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            answers["_lookups"].append(host)
            infos = []
            for address in answers[host]:
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                sockaddr = (address, port, 0, 0) if ":" in address else (address, port)
                infos.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
            return infos
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


# --- SSRF: DNS names are resolved, checked and pinned -------------------------------------


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.1.2.3", "169.254.169.254", "192.168.0.7", "::1", "fd00::1"]
)
def test_a_name_resolving_to_an_internal_address_is_refused(dns, address) -> None:
    dns["cdn.images.test"] = [address]

    with pytest.raises(DownloadRefused, match=r"resolves to .*private or reserved") as caught:
        download(
            "http://cdn.images.test/a.png?sig=s3cr3t", allowed_hosts=[".images.test"], **LIMITS
        )

    assert caught.value.url == "http://cdn.images.test/a.png?sig=s3cr3t"
    assert "s3cr3t" not in str(caught.value)


def test_a_name_with_one_internal_address_among_public_ones_is_refused(dns) -> None:
    dns["cdn.images.test"] = ["93.184.216.34", "10.0.0.9"]
    with pytest.raises(DownloadRefused, match=r"10\.0\.0\.9"):
        download("http://cdn.images.test/a.png", allowed_hosts=[".images.test"], **LIMITS)


def test_an_exactly_listed_name_may_be_internal_and_the_checked_address_is_used(dns, local) -> None:
    dns["emulator.test"] = ["127.0.0.1"]

    with download(
        f"http://emulator.test:{port(local)}/png", allowed_hosts=["emulator.test"], **LIMITS
    ) as fetched:
        assert fetched.file.read() == PNG

    # Only our resolver knows the name: the connection went to the address it checked.
    assert dns["_lookups"] == ["emulator.test"]


def test_a_shared_client_checks_every_new_host(dns, local) -> None:
    dns["ok.test"] = ["127.0.0.1"]
    dns["evil.images.test"] = ["127.0.0.1"]
    allowed = ["ok.test", ".images.test"]
    with make_client() as client:
        with download(
            f"http://ok.test:{port(local)}/png", allowed_hosts=allowed, client=client, **LIMITS
        ):
            pass
        with pytest.raises(DownloadRefused, match=r"evil\.images\.test"):
            download(
                f"http://evil.images.test:{port(local)}/png",
                allowed_hosts=allowed,
                client=client,
                **LIMITS,
            )


def test_a_redirect_to_a_name_resolving_internally_is_refused(dns, local) -> None:
    dns["internal.images.test"] = ["127.0.0.1"]
    target = f"http://internal.images.test:{port(local)}/png"
    local.paths.clear()

    with pytest.raises(DownloadRefused, match=r"internal\.images\.test"):
        download(
            f"http://127.0.0.1:{port(local)}/redirect?to={target}",
            allowed_hosts=["127.0.0.1", ".images.test"],
            **LIMITS,
        )
    assert local.paths == ["/redirect"]  # the second hop never reached the server


def test_a_callers_own_client_is_checked_after_connecting(local) -> None:
    """Second line: a plain httpx client resolves by itself; the peer address is checked."""
    local.paths.clear()
    with httpx.Client() as client, pytest.raises(DownloadRefused, match="localhost"):
        download(
            f"http://localhost:{port(local)}/png",
            allowed_hosts=[".localhost"],
            client=client,
            **LIMITS,
        )


def test_names_that_do_not_resolve_fail_within_the_connect_timeout(dns) -> None:
    dns["nowhere.images.test"] = []
    with pytest.raises(DownloadError, match=r"failed|resolve"):
        download("http://nowhere.images.test/a.png", allowed_hosts=[".images.test"], **LIMITS)


def _certificate(name: str, directory: Path) -> tuple[Path, Path, bytes]:
    """A CA and a certificate for ``name`` it signed: (cert file, key file, CA in PEM)."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = timezone.now()

    def issue(subject: str, key, issuer, signer, extensions) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1))
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = issue(
        "test CA",
        ca_key,
        ca_name,
        ca_key,
        [
            (x509.BasicConstraints(ca=True, path_length=None), True),
            (x509.KeyUsage(False, False, False, False, False, True, True, False, False), True),
            (x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False),
        ],
    )
    leaf = issue(
        name,
        key,
        ca_name,
        ca_key,
        [
            (x509.SubjectAlternativeName([x509.DNSName(name)]), False),
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False),
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),
        ],
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file, ca.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def tls_host(tmp_path_factory) -> Iterator[tuple[ThreadingHTTPServer, ssl.SSLContext]]:
    """An HTTPS image host on 127.0.0.1 whose certificate names ``images.test`` only, and a
    client context trusting its CA. ``server.names``: the SNI names clients sent."""
    cert_file, key_file, ca = _certificate("images.test", tmp_path_factory.mktemp("tls"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.paths, server.names = [], []  # type: ignore[attr-defined]
    context.sni_callback = lambda _sock, name, _context: server.names.append(name)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server, ssl.create_default_context(cadata=ca.decode())
    server.shutdown()
    server.server_close()


def test_https_to_a_pinned_address_checks_the_certificate_against_the_name(dns, tls_host) -> None:
    server, trusted = tls_host
    dns["images.test"] = ["127.0.0.1"]
    server.names.clear()

    with (
        httpx.Client(transport=PinnedTransport(ssl_context=trusted)) as client,
        download(
            f"https://images.test:{port(server)}/png",
            allowed_hosts=["images.test"],
            client=client,
            **LIMITS,
        ) as fetched,
    ):
        assert fetched.file.read() == PNG

    assert dns["_lookups"] == ["images.test"]  # connected to the address checked
    assert server.names == ["images.test"]  # SNI: the name, not the address


def test_a_connection_verified_for_one_name_never_carries_another(dns, tls_host) -> None:
    """Two listed names on one address: the second gets its own TLS check (and fails it)."""
    server, trusted = tls_host
    dns["images.test"] = dns["other.test"] = ["127.0.0.1"]
    allowed = ["images.test", "other.test"]

    with httpx.Client(transport=PinnedTransport(ssl_context=trusted)) as client:

        def fetch(name: str) -> None:
            url = f"https://{name}:{port(server)}/png"
            download(url, allowed_hosts=allowed, client=client, **LIMITS).close()

        fetch("images.test")  # its connection stays open, kept alive for reuse
        with pytest.raises(DownloadError, match="certificate verify failed"):
            fetch("other.test")


@pytest.mark.django_db
def test_production_hosts_refuse_the_emulator_and_keep_the_request_retriable(
    emulator, settings
) -> None:
    configure(settings, ALLOWED_DOWNLOAD_HOSTS=list(DEFAULT_ALLOWED_DOWNLOAD_HOSTS))
    request = GenerationRequest.objects.create(prompt="ssrf", seed=1, width=256, height=256)

    pipeline.run(request.pk)

    request.refresh_from_db()
    assert request.status == Status.FAILED
    assert "not in MODELSLAB['ALLOWED_DOWNLOAD_HOSTS']" in request.error
    assert request.output_urls and request.images.count() == 0
    assert emulator.calls["download"] == 0  # nothing was fetched from the loopback address


# --- hostile bodies through the pipeline --------------------------------------------------


def copy_from(url: str, **fields) -> GenerationRequest:
    """A request whose outputs ModelsLab reported at ``url``; run copies them (no API call)."""
    return run_new(
        "hostile body",
        status=Status.QUEUED,
        provider_id="4242",
        output_urls=[url],
        outputs_expire_at=timezone.now() + timedelta(hours=1),
        **fields,
    )


def stored_files() -> list[Path]:
    root = Path(django_settings.MEDIA_ROOT)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.mark.django_db
def test_a_decompression_bomb_is_refused_and_nothing_is_stored(local, emulator) -> None:
    before = stored_files()
    request = copy_from(f"http://127.0.0.1:{port(local)}/bomb.png")

    assert request.status == Status.FAILED
    assert "decompression bomb" in request.error
    assert "MAX_IMAGE_PIXELS" in request.error
    assert request.images.count() == 0
    assert stored_files() == before
    assert emulator.calls["text2img"] == 0


@pytest.mark.django_db
def test_an_oversized_body_is_refused(local, emulator, settings) -> None:
    configure(settings, MAX_IMAGE_BYTES=len(PNG) - 1)
    request = copy_from(f"http://127.0.0.1:{port(local)}/png")

    assert request.status == Status.FAILED
    assert f"larger than MAX_IMAGE_BYTES ({len(PNG) - 1} bytes)" in request.error


@pytest.mark.django_db
@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "application/json"])
def test_a_body_that_is_not_labelled_as_an_image_is_refused(local, emulator, content_type) -> None:
    request = copy_from(f"http://127.0.0.1:{port(local)}/png?type={content_type}")

    assert request.status == Status.FAILED
    assert f"answered '{content_type}'" in request.error
    assert "not an image" in request.error
    assert request.output_urls  # kept: a later run can copy it again


@pytest.mark.django_db
@pytest.mark.parametrize("content_type", ["image/png", "application/octet-stream"])
def test_image_and_generic_binary_types_are_accepted(local, emulator, content_type) -> None:
    request = copy_from(f"http://127.0.0.1:{port(local)}/png?type={content_type}")
    assert request.status == Status.SUCCEEDED, request.error


# --- webhook auth fails closed ------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("secrets", [[], ["the-real-secret-0123456789abcdef"]])
def test_webhook_without_the_secret_is_refused(client, settings, secrets) -> None:
    configure(settings, WEBHOOK_SECRETS=secrets)
    request = GenerationRequest.objects.create(
        prompt="p", width=256, height=256, status=Status.PROCESSING, provider_id="77"
    )
    url = reverse("modelslab:webhook", kwargs={"secret": "guessed"})

    response = client.post(
        url, {"status": "success", "id": 77, "output": ["http://x/y.png"]}, "application/json"
    )

    assert response.status_code == 400
    assert WebhookDelivery.objects.get().outcome == WebhookDelivery.Outcome.REJECTED
    request.refresh_from_db()
    assert request.status == Status.PROCESSING
    assert client.get(url).status_code == 405


def test_the_client_repr_and_errors_never_show_the_key(settings) -> None:
    configure(settings, BASE_URL="http://127.0.0.1:9/api")
    client = pipeline.build_client()
    assert TEST_API_KEY not in repr(client)
    with client, pytest.raises(Exception) as caught:  # any error: its text is checked
        client.fetch("1")
    text = f"{caught.value!s} {caught.value!r} {vars(caught.value)}"
    assert TEST_API_KEY not in text


# --- the API key: stripped when read, redacted in every form it can take -----------------


@pytest.fixture
def provider(local, settings) -> Iterator[Callable[..., None]]:
    """``BASE_URL`` on ``local``, whose API calls all get the answer set by calling this."""
    configure(settings, BASE_URL=f"http://127.0.0.1:{port(local)}/api", MAX_RETRIES=0)

    def answer(status: int, body: bytes, content_type: str = "application/json") -> None:
        local.answer = (status, body, content_type)  # type: ignore[attr-defined]

    yield answer
    local.answer = NO_ANSWER  # type: ignore[attr-defined]


def all_text(value: object) -> list[str]:
    """Every string in ``value``, field names included."""
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in (*all_text(k), *all_text(v))]
    if isinstance(value, list | tuple):
        return [t for v in value for t in all_text(v)]
    return [value] if isinstance(value, str) else []


@pytest.mark.django_db
@pytest.mark.parametrize("api_version", ["v6", "v7"])
def test_a_key_read_with_a_trailing_newline_is_stripped(emulator, settings, api_version) -> None:
    # v7 sends the key as a header too: with the newline, httpx refused it ("Illegal header
    # value b'<key>\\n'") and that text, key included, became the request's error.
    configure(settings, API_KEY=f"\t{TEST_API_KEY}\n")
    emulator.configure(api_keys={TEST_API_KEY})  # exactly the key, nothing around it

    request = run_new("a key test", seed=1, api_version=api_version)

    assert request.status == Status.SUCCEEDED, request.error
    assert request.images.count() == 1


@pytest.mark.django_db
def test_the_key_as_a_field_name_of_an_answer_is_stored_redacted(provider, admin_client) -> None:
    errors = {TEST_API_KEY: ["is not valid"], f"{TEST_API_KEY}.key": ["is too long"]}
    provider(422, json.dumps({"status": "error", "errors": errors}).encode())

    request = run_new("a key test", seed=1)

    assert request.status == Status.FAILED
    kept = request.provider_responses[-1]["body"]
    assert kept["errors"] == {"[redacted]": ["is not valid"], "[redacted].key": ["is too long"]}
    assert "is not valid" in request.error
    page = admin_client.get(
        reverse("admin:django_modelslab_generationrequest_change", args=[request.pk])
    )
    assert page.status_code == 200
    for text in (json.dumps(request.provider_responses), request.error, page.content.decode()):
        assert TEST_API_KEY not in text


@pytest.mark.django_db
def test_a_key_across_the_truncation_point_of_a_text_answer_leaves_no_prefix(provider) -> None:
    head = MAX_TEXT - 18  # the cut fell 18 characters into the key
    provider(200, b"x" * head + TEST_API_KEY.encode() + b"y" * 100, "text/plain")

    request = run_new("a key test", seed=1)

    assert request.status == Status.FAILED
    kept = request.provider_responses[-1]["body"]
    assert kept.startswith("x" * head + "[redacted")
    assert len(kept) == MAX_TEXT
    assert TEST_API_KEY[:18] not in kept and TEST_API_KEY[:18] not in request.error


ODD_KEY = 'odd"key\\with/slash+plus&amp=eq é-0123456789'  # JSON, repr and URLs escape it


@pytest.mark.django_db
def test_the_key_is_redacted_in_its_escaped_forms(provider, settings) -> None:
    configure(settings, API_KEY=ODD_KEY)
    forms = {
        "repr": repr(ODD_KEY)[1:-1],
        "json": json.dumps(ODD_KEY)[1:-1],
        "bytes": repr(ODD_KEY.encode())[2:-1],
        "url": quote(ODD_KEY, safe=""),
        "path": quote(ODD_KEY),
        "form": quote_plus(ODD_KEY),
        "json twice": json.dumps(json.dumps(ODD_KEY)[1:-1])[1:-1],
    }
    assert len(set(forms.values())) == len(forms)  # each form differs from the others
    body = {"status": "error", "message": " ".join(forms.values()), "echo": forms}
    provider(400, json.dumps(body).encode())

    request = run_new("a key test", seed=1)

    assert request.status == Status.FAILED
    kept = [*all_text(request.provider_responses), request.error]
    for name, form in {"raw": ODD_KEY, **forms}.items():
        assert not [text for text in kept if form in text], name
    assert "[redacted]" in request.error


# --- extra cannot set what the pipeline owns ------------------------------------------------

HIJACK = {"webhook": "http://attacker.invalid/hook", "KEY": "someone-elses", "steps": 30}


@pytest.mark.django_db(transaction=True)
def test_submit_refuses_extra_naming_pipeline_parameters(emulator) -> None:
    request = GenerationRequest(prompt="p", width=256, height=256, extra=HIJACK)

    with pytest.raises(ReservedParameters) as caught:
        pipeline.submit(request)

    assert isinstance(caught.value, ValueError)
    assert caught.value.names == ["KEY", "webhook"]
    assert "Extra cannot set KEY, webhook: django-modelslab sets these itself" in str(caught.value)
    assert not GenerationRequest.objects.exists()
    assert emulator.calls["text2img"] == 0


@pytest.mark.django_db(transaction=True)
def test_regenerate_refuses_a_stored_extra_naming_pipeline_parameters(emulator) -> None:
    request = pipeline.submit(GenerationRequest(prompt="p", width=256, height=256, seed=1))
    GenerationRequest.objects.filter(pk=request.pk).update(extra={"track_id": "1-1"})
    request.refresh_from_db()

    with pytest.raises(ReservedParameters, match=rf"Request #{request.pk}: .* track_id"):
        pipeline.regenerate(request)

    request.refresh_from_db()
    assert request.status == Status.SUCCEEDED
    assert not request.images.filter(superseded=True).exists()
    assert emulator.calls["text2img"] == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["text2img", "upscale"])
def test_a_row_queued_with_such_extra_never_sends_it(emulator, kind) -> None:
    """Rows saved before the check (or by hand): the pipeline's own values are sent."""
    fields = {"kind": kind, "prompt": "p", "width": 256, "height": 256}
    if kind == "upscale":
        image = pipeline.submit(GenerationRequest(prompt="p", width=256, height=256)).images.get()
        fields.update(init_from=image, init_image=image.image.name, scale=2)
    request = GenerationRequest.objects.create(**fields, status=Status.QUEUED)
    extra = {**HIJACK, "enhance_prompt": "yes"}
    GenerationRequest.objects.filter(pk=request.pk).update(extra=extra)

    pipeline.run(request.pk)

    route = "upscale" if kind == "upscale" else "text2img"
    sent = [body for name, body in emulator.requests if name == route][-1]
    assert "webhook" not in sent and "KEY" not in sent
    assert sent["enhance_prompt"] == "yes"
    assert GenerationRequest.objects.get(pk=request.pk).status == Status.SUCCEEDED
