"""Frontend settings refused at start-up with one line naming the setting (argparse's exit 2), rather than
failing later in a misleading way: a port no socket can have (a bigger one wrapped around to another port),
a TLS file that is not there (once said as "cannot listen on ...")."""

from __future__ import annotations

import pytest

from dynamo.frontend.config import parse_frontend_args


def _refused(capsys, argv: list[str], environ: dict[str, str]) -> str:
    with pytest.raises(SystemExit) as exc:
        parse_frontend_args(argv, environ=environ)
    assert exc.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("port", ["99999", "65536", "-5"])
def test_a_port_outside_the_tcp_range_is_refused(capsys, port):
    line = _refused(capsys, ["--http-port", port], {})
    assert "--http-port / DYN_HTTP_PORT must be a TCP port, 0-65535" in line and port in line
    line = _refused(capsys, [], {"DYN_HTTP_PORT": port})
    assert "DYN_HTTP_PORT must be a TCP port" in line
    assert "--grpc-metrics-port" in _refused(capsys, ["--grpc-metrics-port", port], {})


def test_ports_at_the_ends_of_the_range_are_taken():
    assert parse_frontend_args(["--http-port", "0"], environ={})[0].http_port == 0
    assert parse_frontend_args([], environ={"DYN_HTTP_PORT": "65535"})[0].http_port == 65535


def test_a_missing_tls_file_is_named_with_its_flag(capsys, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    line = _refused(capsys, ["--tls-cert-path", str(cert), "--tls-key-path", str(key)], {})
    assert f"--tls-cert-path / DYN_TLS_CERT_PATH: {cert}: no such file" in line
    cert.write_text("certificate")
    line = _refused(capsys, ["--tls-cert-path", str(cert), "--tls-key-path", str(key)], {})
    assert f"--tls-key-path / DYN_TLS_KEY_PATH: {key}: no such file" in line
    key.write_text("key")
    line = _refused(capsys, ["--tls-cert-path", str(cert), "--tls-key-path", str(key),
                             "--tls-client-ca-cert-path", str(tmp_path / "ca.pem")], {})
    assert "--tls-client-ca-cert-path" in line and "ca.pem: no such file" in line
    config, _ = parse_frontend_args(["--tls-cert-path", str(cert), "--tls-key-path", str(key)], environ={})
    assert (config.tls_cert_path, config.tls_key_path) == (str(cert), str(key))


def test_busy_thresholds_outside_kv_routing_are_said_to_do_nothing():
    from dynamo.frontend.config import parse_frontend_args

    _, said = parse_frontend_args(["--router-mode", "round-robin", "--active-decode-blocks-threshold", "0.5",
                                   "--router-queue-threshold", "0.8"], {})
    assert any(w.startswith("--active-decode-blocks-threshold / DYN_ACTIVE_DECODE_BLOCKS_THRESHOLD, "
                            "--router-queue-threshold") and "no effect" in w for w in said), said
    for argv in (["--router-mode", "kv", "--active-decode-blocks-threshold", "0.5"], ["--router-mode", "random"]):
        assert not any("no effect" in w and "threshold" in w for w in parse_frontend_args(argv, {})[1]), argv
