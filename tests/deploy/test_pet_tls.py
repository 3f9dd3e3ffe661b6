"""The PET coordinator served with TLS (a self-signed certificate made here): participants
trusting it complete a round with the exact mean, plain HTTP and clients without the CA are
refused, and a missing certificate file is a config error (exit 2, one line)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from pathlib import Path

import httpx
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bbjax.deploy.pet import wire
from bbjax.deploy.pet.participants import local_model, run_participants
from bbjax.protocols.pet.round_params import RoundParameters
from tests.deploy.processes import free_port
from tests.deploy.test_pet_participants import CONFIG, LENGTH


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost and its key, as PEM files in ``directory``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def tls_config(tmp_path: Path, certificate: Path, key: Path) -> Path:
    """test_pet_participants' coordinator config with a ``[tls]`` table."""
    path = tmp_path / "pet.toml"
    path.write_text(CONFIG.format(sum_prob=0.2, time_min=0.5, length=LENGTH)
                    + f'[tls]\ncertificate = "{certificate}"\nkey = "{key}"\n')
    return path


def test_a_tls_coordinator_serves_a_round_to_participants_that_trust_it(processes, tmp_path):
    cert, key = self_signed(tmp_path)
    port = free_port()
    process = processes("pet", "coordinator", "--config", str(tls_config(tmp_path, cert, key)),
                        "--port", str(port), name="coordinator")
    url = f"https://127.0.0.1:{port}"
    trusted = ssl.create_default_context(cafile=cert)
    process.wait_http(f"{url}/health", verify=trusted)
    seen: dict[tuple[str, bytes], np.ndarray] = {}

    def models(name: str, params: RoundParameters) -> np.ndarray:
        seen[name, params.seed] = model = local_model(name, params)
        return model

    first = httpx.get(f"{url}/health", verify=trusted).json()["round_id"]
    (record,) = asyncio.run(run_participants(url, 20, rounds=1, models=models, timeout=60,
                                             verify=str(cert)))  # as --ca passes it
    assert record.round_id == first and record.sums and len(record.updates) >= 3
    round_id, model = wire.decode_model(httpx.get(f"{url}/model", verify=trusted).content,
                                        LENGTH)
    assert round_id == first
    expected = np.mean([seen[name, record.seed].astype(np.float64) for name in record.updates],
                       axis=0)
    np.testing.assert_allclose(model, expected, rtol=0, atol=1e-9)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{url}/health", timeout=5)
    assert process.stop() == 0


def test_a_missing_tls_certificate_exits_2_with_one_line(processes, tmp_path):
    missing = tmp_path / "no-such-cert.pem"
    _, key = self_signed(tmp_path)
    process = processes("pet", "coordinator", "--config",
                        str(tls_config(tmp_path, missing, key)), name="bad")
    assert process.proc.wait(60) == 2
    out = process.output().strip().splitlines()
    assert len(out) == 1 and "tls.certificate" in out[0] and str(missing) in out[0], out


def test_participants_with_a_missing_ca_file_exit_2_with_one_line(processes, tmp_path):
    missing = tmp_path / "no-such-ca.pem"
    process = processes("pet", "participants", "-n", "1", "--url", "https://127.0.0.1:1",
                        "--ca", str(missing), name="participants")
    assert process.proc.wait(60) == 2
    out = process.output().strip().splitlines()
    assert len(out) == 1 and "CA certificate" in out[0] and str(missing) in out[0], out
