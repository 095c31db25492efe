"""Encryption at rest of organisations' provider API keys.

Keys are encrypted with Fernet (AES-128-CBC + HMAC-SHA256) under
``AEGIS_SECRET_KEY``; the database only ever holds the token and a short
hint ("…a1b2") so that people can tell keys apart.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

from core.settings import Settings


class SecretKeyMissing(RuntimeError):
    """No AEGIS_SECRET_KEY: organisation API keys can be neither stored nor read."""


def new_secret_key() -> str:
    return Fernet.generate_key().decode("ascii")


def _fernet(settings: Settings) -> Fernet:
    if settings.secret_key is None:
        raise SecretKeyMissing("AEGIS_SECRET_KEY is not set")
    try:
        return Fernet(settings.secret_key.get_secret_value().encode("ascii"))
    except ValueError as exc:
        # The message names the setting, never its value.
        raise SecretKeyMissing("AEGIS_SECRET_KEY is not a valid Fernet key") from exc


def encrypt_secret(settings: Settings, plaintext: str) -> bytes:
    return _fernet(settings).encrypt(plaintext.encode("utf-8"))


def decrypt_secret(settings: Settings, token: bytes) -> str:
    try:
        return _fernet(settings).decrypt(token).decode("utf-8")
    except InvalidToken as exc:
        raise SecretKeyMissing("a stored API key cannot be decrypted with AEGIS_SECRET_KEY") from exc


def key_hint(plaintext: str) -> str:
    """The last four characters, enough to recognise a key, not to use it."""
    return "…" + plaintext[-4:] if len(plaintext) >= 12 else "…"
