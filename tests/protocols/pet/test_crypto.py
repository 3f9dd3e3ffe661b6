"""PET crypto (PyNaCl): against RFC test vectors and pyca/cryptography (OpenSSL) as an
independent implementation."""

import hashlib
import random
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bbjax.errors import InvalidArgument, PetCryptoError
from bbjax.protocols.pet.crypto import (
    ENCRYPTED_MASK_SEED_LENGTH,
    SEALBYTES,
    EncryptKeyPair,
    SigningKeyPair,
    decrypt_seed,
    encrypt_seed,
    next_round_seed,
    seal,
    sha256,
    verify,
)
from bbjax.protocols.pet.seed import MaskSeed

RAW = (Encoding.Raw, PublicFormat.Raw)

# RFC 8032 section 7.1, tests 1 and 2: (secret seed, public key, message, signature)
RFC8032 = [
    ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
]


@pytest.mark.parametrize("seed,public,message,signature", RFC8032)
def test_ed25519_rfc8032_vectors(seed, public, message, signature):
    keys = SigningKeyPair.from_seed(bytes.fromhex(seed))
    assert keys.public.hex() == public
    assert keys.sign(bytes.fromhex(message)).hex() == signature
    assert verify(keys.public, bytes.fromhex(message), bytes.fromhex(signature))


def test_ed25519_matches_openssl_on_random_keys_and_messages():
    rng = random.Random(11)
    for _ in range(20):
        seed, message = rng.randbytes(32), rng.randbytes(rng.randrange(200))
        keys = SigningKeyPair.from_seed(seed)
        reference = Ed25519PrivateKey.from_private_bytes(seed)
        assert keys.public == reference.public_key().public_bytes(*RAW)
        signature = keys.sign(message)
        assert signature == reference.sign(message)
        Ed25519PublicKey.from_public_bytes(keys.public).verify(signature, message)


def test_verify_rejects_every_tampering():
    rng = random.Random(3)
    keys, other = SigningKeyPair.generate(), SigningKeyPair.generate()
    message = rng.randbytes(50)
    signature = keys.sign(message)
    assert verify(keys.public, message, signature)
    assert not verify(other.public, message, signature)
    assert not verify(keys.public, message + b"x", signature)
    for i in rng.sample(range(64), 16):
        bad = bytearray(signature)
        bad[i] ^= 1 << rng.randrange(8)
        assert not verify(keys.public, message, bytes(bad))
    assert not verify(keys.public, message, signature[:63])
    assert not verify(keys.public, message, None)
    assert not verify(bytes(32), message, bytes(64))
    with pytest.raises(PetCryptoError, match="public signing key must be 32 bytes, got 31"):
        verify(keys.public[:31], message, signature)


def test_key_pairs_refuse_wrong_lengths_and_types():
    with pytest.raises(PetCryptoError, match="signing key seed must be 32 bytes, got 33"):
        SigningKeyPair.from_seed(bytes(33))
    with pytest.raises(PetCryptoError, match="secret encryption key must be 32 bytes, got str"):
        EncryptKeyPair.from_secret("k" * 32)
    with pytest.raises(PetCryptoError, match="encryption key seed must be 32 bytes, got 0"):
        EncryptKeyPair.from_seed(b"")


def test_key_pairs_are_values_whose_repr_hides_the_secret():
    seed = bytes(range(32))
    keys = SigningKeyPair.from_seed(seed)
    assert keys == SigningKeyPair.from_seed(bytearray(seed)) != SigningKeyPair.generate()
    assert seed.hex() not in repr(keys) and keys.public.hex() in repr(keys)
    box = EncryptKeyPair.from_secret(seed)
    assert seed.hex() not in repr(box) and box.public.hex() in repr(box)


def test_x25519_rfc7748_vector_and_openssl():
    # RFC 7748 section 6.1: Alice's private and public keys
    alice = EncryptKeyPair.from_secret(
        bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
    assert alice.public.hex() == "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    for _ in range(5):
        keys = EncryptKeyPair.generate()
        expected = X25519PrivateKey.from_private_bytes(keys.secret).public_key().public_bytes(*RAW)
        assert keys.public == expected


def test_encrypt_key_from_seed_is_libsodiums_seed_keypair():
    # crypto_box_seed_keypair: the secret key is the first half of SHA-512(seed)
    seed = random.Random(5).randbytes(32)
    keys = EncryptKeyPair.from_seed(seed)
    assert keys.secret == hashlib.sha512(seed).digest()[:32]
    assert keys == EncryptKeyPair.from_seed(seed)


def test_sealed_boxes_round_trip_and_refuse_tampering():
    rng = random.Random(7)
    keys, other = EncryptKeyPair.generate(), EncryptKeyPair.generate()
    for size in (0, 1, 32, 1000):
        plaintext = rng.randbytes(size)
        box = seal(keys.public, plaintext)
        assert len(box) == size + SEALBYTES
        assert keys.open(box) == plaintext
        assert seal(keys.public, plaintext) != box  # a fresh ephemeral key each time
        with pytest.raises(PetCryptoError, match="does not open"):
            other.open(box)
        for i in rng.sample(range(len(box)), min(8, len(box))):
            bad = bytearray(box)
            bad[i] ^= 0x80
            with pytest.raises(PetCryptoError, match="does not open"):
                keys.open(bytes(bad))
    with pytest.raises(PetCryptoError, match="at least 48 bytes, got 47"):
        keys.open(bytes(47))
    with pytest.raises(PetCryptoError, match="must be bytes"):
        keys.open(None)
    with pytest.raises(PetCryptoError, match="low-order point"):
        seal(bytes(32), b"seed")
    with pytest.raises(PetCryptoError, match="public encryption key must be 32 bytes"):
        seal(bytes(16), b"seed")


def test_sha256_is_hashlibs():
    assert sha256(b"abc").hex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def _reference_round_seed(secret, old_seed, sum_prob, update_prob):
    # idle.rs: sk from SigningKeySeed(coordinator secret), sign seed || sum.to_le_bytes()
    # || update.to_le_bytes(), seed = sha256(signature)
    message = old_seed + struct.pack("<d", sum_prob) + struct.pack("<d", update_prob)
    signature = Ed25519PrivateKey.from_private_bytes(secret).sign(message)
    return hashlib.sha256(signature).digest()


def test_next_round_seed_is_xaynets_idle_chain():
    rng = random.Random(13)
    seed = bytes(32)
    for _ in range(10):
        coordinator = EncryptKeyPair.generate()
        sum_prob, update_prob = rng.random(), rng.random()
        new = next_round_seed(coordinator.secret, seed, sum_prob, update_prob)
        assert new == _reference_round_seed(coordinator.secret, seed, sum_prob, update_prob)
        assert new != next_round_seed(coordinator.secret, seed, sum_prob, update_prob * 0.5)
        seed = new


def test_next_round_seed_refuses_bad_arguments():
    with pytest.raises(PetCryptoError, match="coordinator secret key must be 32 bytes"):
        next_round_seed(bytes(64), bytes(32), 0.5, 0.9)
    with pytest.raises(PetCryptoError, match="round seed must be 32 bytes, got 31"):
        next_round_seed(bytes(32), bytes(31), 0.5, 0.9)
    with pytest.raises(InvalidArgument, match="update_prob must be a float"):
        next_round_seed(bytes(32), bytes(32), 0.5, "0.9")


def test_mask_seeds_travel_as_80_byte_sealed_boxes():
    ephemeral, other = EncryptKeyPair.generate(), EncryptKeyPair.generate()
    seed = MaskSeed.generate()
    encrypted = encrypt_seed(seed, ephemeral.public)
    assert len(encrypted) == ENCRYPTED_MASK_SEED_LENGTH == 80
    assert decrypt_seed(encrypted, ephemeral) == seed
    assert ephemeral.open(encrypted) == seed.as_bytes()
    with pytest.raises(PetCryptoError, match="does not open"):
        decrypt_seed(encrypted, other)
    with pytest.raises(PetCryptoError, match="encrypted mask seed must be 80 bytes, got 81"):
        decrypt_seed(encrypted + b"\x00", ephemeral)
    with pytest.raises(InvalidArgument, match="seed must be a MaskSeed"):
        encrypt_seed(seed.as_bytes(), ephemeral.public)
    with pytest.raises(PetCryptoError, match="encrypted mask seed must be 80 bytes, got 79"):
        decrypt_seed(seal(ephemeral.public, bytes(31)), ephemeral)
