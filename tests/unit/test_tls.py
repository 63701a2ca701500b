"""HTTPS options: the self-signed certificate of `--https` (its names, its key's mode, made once and reused)
and how --https / --ssl-certfile / --ssl-keyfile reach the server (EMOTUNE_SSL_* -> the service's `ssl`).
The browser over HTTPS: tests/browser/test_https_browser.py."""

from __future__ import annotations

import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from emotune import tls
from emotune.analyze_commands import serve_command, tls_files
from emotune.cli import build_parser
from emotune.serving import serve_settings, ssl_settings


def test_the_certificate_names_this_machine_and_its_key_is_private(tmp_path):
    names = tls.local_names("127.0.0.2")
    assert names[:3] == ["localhost", "127.0.0.1", "::1"] and "127.0.0.2" in names
    assert "0.0.0.0" not in tls.local_names("0.0.0.0")  # a wildcard is no address to name
    cert, key, made = tls.self_signed_certificate(names, tmp_path / "tls")
    assert made and tls.certificate_names(cert) == set(names)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(cert.parent.stat().st_mode) == 0o700
    # The key is the certificate's.
    public = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    assert public == private.public_key()


def test_the_certificate_is_reused_until_it_misses_a_name_or_runs_out(tmp_path, monkeypatch):
    folder = tmp_path / "tls"
    cert, key, made = tls.self_signed_certificate(["localhost", "127.0.0.1"], folder)
    first = cert.read_bytes(), key.read_bytes()
    assert made
    assert tls.self_signed_certificate(["127.0.0.1"], folder)[2] is False  # a subset: reused as it is
    assert (cert.read_bytes(), key.read_bytes()) == first
    assert tls.self_signed_certificate(["localhost", "127.0.0.1", "10.1.2.3"], folder)[2]  # a new address
    assert "10.1.2.3" in tls.certificate_names(cert) and cert.read_bytes() != first[0]
    monkeypatch.setattr(tls, "VALID_DAYS", tls.RENEW_DAYS - 1)
    assert tls.self_signed_certificate(["::1"], folder)[2]  # a new name: made, with a short life this time
    assert tls.self_signed_certificate(["::1"], folder)[2]  # ... so it is due for renewal at once


def test_https_makes_the_certificate_under_the_users_config_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    args = build_parser().parse_args(["serve", "--https", "--host", "127.0.0.2"])
    cert, key = tls_files(args, args.host)
    assert cert == tmp_path / "emotune" / "tls" / "cert.pem" and key.parent == cert.parent
    assert "127.0.0.2" in tls.certificate_names(cert) and "made" in capsys.readouterr().err
    assert tls_files(args, args.host) == (cert, key) and "reusing" in capsys.readouterr().err


def test_certificate_files_reach_bentoml_serve_as_absolute_paths(tmp_path, monkeypatch):
    (tmp_path / "c.pem").write_text("cert")
    (tmp_path / "k.pem").write_text("key")
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["serve", "--ssl-certfile", "c.pem", "--ssl-keyfile", "k.pem"])
    assert tls_files(args, None) == (tmp_path / "c.pem", tmp_path / "k.pem")
    args.ssl_certfile, args.ssl_keyfile = map(str, tls_files(args, None))
    _, env = serve_command(args, {})
    assert env["EMOTUNE_SSL_CERTFILE"] == str(tmp_path / "c.pem")
    assert env["EMOTUNE_SSL_KEYFILE"] == str(tmp_path / "k.pem")
    # ... which the service's settings read and turn into BentoML's ssl configuration.
    monkeypatch.setenv("EMOTUNE_SSL_CERTFILE", env["EMOTUNE_SSL_CERTFILE"])
    monkeypatch.setenv("EMOTUNE_SSL_KEYFILE", env["EMOTUNE_SSL_KEYFILE"])
    assert ssl_settings(serve_settings().serve) == {
        "ssl": {"enabled": True, "certfile": str(tmp_path / "c.pem"), "keyfile": str(tmp_path / "k.pem")}
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--https", "--ssl-certfile", "c.pem"], "--https makes its own certificate"),
        (["--ssl-certfile", "c.pem"], "needs both --ssl-certfile and --ssl-keyfile"),
        (["--ssl-certfile", "c.pem", "--ssl-keyfile", "missing.pem"], "cannot read"),
    ],
)
def test_tls_options_that_do_not_go_together_are_refused(tmp_path, monkeypatch, options, message):
    (tmp_path / "c.pem").write_text("cert")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=message):
        tls_files(build_parser().parse_args(["ui", *options]), None)


def test_the_service_refuses_half_a_tls_configuration(tmp_path):
    assert ssl_settings({"ssl_certfile": None, "ssl_keyfile": None}) == {}
    with pytest.raises(ValueError, match="needs both"):
        ssl_settings({"ssl_certfile": str(tmp_path / "c.pem"), "ssl_keyfile": None})
    with pytest.raises(ValueError, match="cannot read the TLS certificate"):
        ssl_settings({"ssl_certfile": str(tmp_path / "c.pem"), "ssl_keyfile": str(tmp_path / "k.pem")})
