"""PET's cryptographic primitives, as xaynet's ``xaynet_core::crypto`` (libsodium via PyNaCl).

- Participant identities are Ed25519 key pairs (:class:`SigningKeyPair`: 32-byte public
  key, 64-byte detached signatures).
- The coordinator's per-round key and the sum participants' ephemeral keys are X25519 key
  pairs (:class:`EncryptKeyPair`); messages and mask seeds travel in libsodium sealed boxes,
  ``SEALBYTES`` (48) longer than their plaintext, so an encrypted mask seed is 80 bytes.
- :func:`next_round_seed` is the Idle phase's round-seed chain.

Every failure (a key of the wrong length, a box that does not open) raises
:class:`~bbjax.errors.PetCryptoError`; :func:`verify` answers ``False`` for a bad signature.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

import nacl.exceptions
import nacl.public
import nacl.signing

from bbjax.errors import InvalidArgument, PetCryptoError
from bbjax.protocols.pet.seed import MaskSeed

PUBLIC_KEY_LENGTH = 32
SECRET_KEY_LENGTH = 32
SEED_LENGTH = 32
SIGNATURE_LENGTH = 64
SEALBYTES = 48
ENCRYPTED_MASK_SEED_LENGTH = SEALBYTES + SEED_LENGTH


def check_bytes(value: object, length: int, name: str) -> bytes:
    """``value`` as ``bytes`` of exactly ``length``, else :class:`PetCryptoError` naming it."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise PetCryptoError(f"{name} must be {length} bytes, got {type(value).__name__}")
    value = bytes(value)
    if len(value) != length:
        raise PetCryptoError(f"{name} must be {length} bytes, got {len(value)}")
    return value


def sha256(data: bytes) -> bytes:
    """The 32-byte SHA-256 digest of ``data``."""
    return hashlib.sha256(bytes(data)).digest()


@dataclass(frozen=True, repr=False)
class SigningKeyPair:
    """An Ed25519 key pair: ``public`` (32 bytes) and the ``seed`` (32 bytes) it derives from."""

    seed: bytes
    public: bytes = field(init=False)

    def __post_init__(self):
        seed = check_bytes(self.seed, SEED_LENGTH, "signing key seed")
        object.__setattr__(self, "seed", seed)
        object.__setattr__(self, "_key", nacl.signing.SigningKey(seed))
        object.__setattr__(self, "public", bytes(self._key.verify_key))

    @classmethod
    def generate(cls) -> SigningKeyPair:
        """A fresh key pair from libsodium's randomness."""
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKeyPair:
        """The key pair libsodium's ``crypto_sign_seed_keypair`` derives from a 32-byte seed."""
        return cls(seed)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte detached Ed25519 signature of ``message``."""
        return self._key.sign(bytes(message)).signature

    def __repr__(self) -> str:
        return f"SigningKeyPair(public={self.public.hex()})"


def verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``public``'s Ed25519 signature of ``message``.

    A signature that is not 64 bytes is simply not valid (``False``); a public key that is
    not 32 bytes raises :class:`PetCryptoError`.
    """
    public = check_bytes(public, PUBLIC_KEY_LENGTH, "public signing key")
    if not isinstance(signature, (bytes, bytearray, memoryview)) or len(signature) != SIGNATURE_LENGTH:
        return False
    try:
        nacl.signing.VerifyKey(public).verify(bytes(message), bytes(signature))
    except nacl.exceptions.CryptoError:
        return False
    return True


@dataclass(frozen=True, repr=False)
class EncryptKeyPair:
    """An X25519 key pair for sealed boxes: ``public`` and ``secret`` (32 bytes each)."""

    secret: bytes
    public: bytes = field(init=False)

    def __post_init__(self):
        secret = check_bytes(self.secret, SECRET_KEY_LENGTH, "secret encryption key")
        object.__setattr__(self, "secret", secret)
        object.__setattr__(self, "_key", nacl.public.PrivateKey(secret))
        object.__setattr__(self, "public", bytes(self._key.public_key))

    @classmethod
    def generate(cls) -> EncryptKeyPair:
        """A fresh key pair from libsodium's randomness."""
        return cls(bytes(nacl.public.PrivateKey.generate()))

    @classmethod
    def from_secret(cls, secret: bytes) -> EncryptKeyPair:
        """The key pair of a 32-byte X25519 secret key."""
        return cls(secret)

    @classmethod
    def from_seed(cls, seed: bytes) -> EncryptKeyPair:
        """The key pair libsodium's ``crypto_box_seed_keypair`` derives from a 32-byte seed."""
        seed = check_bytes(seed, SEED_LENGTH, "encryption key seed")
        return cls(bytes(nacl.public.PrivateKey.from_seed(seed)))

    def open(self, ciphertext: bytes) -> bytes:
        """The plaintext of a sealed box sent to this key pair; :class:`PetCryptoError` if it
        is too short, was sealed to another key or was tampered with."""
        if not isinstance(ciphertext, (bytes, bytearray, memoryview)):
            raise PetCryptoError(f"a sealed box must be bytes, got {type(ciphertext).__name__}")
        if len(ciphertext) < SEALBYTES:
            raise PetCryptoError(
                f"a sealed box is at least {SEALBYTES} bytes, got {len(ciphertext)}")
        try:
            return nacl.public.SealedBox(self._key).decrypt(bytes(ciphertext))
        except nacl.exceptions.CryptoError:
            raise PetCryptoError("the sealed box does not open with this key pair") from None

    def __repr__(self) -> str:
        return f"EncryptKeyPair(public={self.public.hex()})"


def seal(public: bytes, plaintext: bytes) -> bytes:
    """``plaintext`` in a libsodium sealed box to ``public`` (``SEALBYTES`` longer)."""
    public = check_bytes(public, PUBLIC_KEY_LENGTH, "public encryption key")
    try:
        return nacl.public.SealedBox(nacl.public.PublicKey(public)).encrypt(bytes(plaintext))
    except nacl.exceptions.CryptoError:
        raise PetCryptoError("cannot seal to this public key (a low-order point)") from None


def encrypt_seed(seed: MaskSeed, ephm_pk: bytes) -> bytes:
    """A mask seed sealed to a sum participant's ephemeral key: an 80-byte ``EncryptedMaskSeed``."""
    if not isinstance(seed, MaskSeed):
        raise InvalidArgument(f"seed must be a MaskSeed, got {type(seed).__name__}")
    return seal(ephm_pk, seed.as_bytes())


def decrypt_seed(ciphertext: bytes, keys: EncryptKeyPair) -> MaskSeed:
    """The mask seed in an 80-byte ``EncryptedMaskSeed``, opened with the ephemeral ``keys``."""
    ciphertext = check_bytes(ciphertext, ENCRYPTED_MASK_SEED_LENGTH, "encrypted mask seed")
    return MaskSeed(keys.open(ciphertext))


def next_round_seed(coordinator_secret: bytes, old_seed: bytes, sum_prob: float,
                    update_prob: float) -> bytes:
    """The Idle phase's new round seed (xaynet ``Idle::update_round_seed``).

    ``sha256(sign(old_seed || f64_le(sum_prob) || f64_le(update_prob)))``, signed with the
    Ed25519 key whose seed is the coordinator's 32-byte X25519 secret key (of the new round).
    """
    secret = check_bytes(coordinator_secret, SECRET_KEY_LENGTH, "coordinator secret key")
    old_seed = check_bytes(old_seed, SEED_LENGTH, "round seed")
    for name, prob in (("sum_prob", sum_prob), ("update_prob", update_prob)):
        if isinstance(prob, bool) or not isinstance(prob, (int, float)):
            raise InvalidArgument(f"{name} must be a float, got {prob!r}")
    message = old_seed + struct.pack("<d", sum_prob) + struct.pack("<d", update_prob)
    return sha256(SigningKeyPair(secret).sign(message))
