"""AWS KMS envelope encryption of the per-subject data keys (S3 deployments).

With `AUDITLAKE_KMS_KEY_ID` set (a KMS key id, ARN or alias), each subject's data key is
created by KMS `GenerateDataKey` and only its KMS ciphertext is kept in the keystore
(`datakeys.sqlite`); opening it needs KMS `Decrypt` with the same encryption context
`{"subject_id": <id>}`, so a wrapped key cannot be swapped to another subject, and KMS
CloudTrail records every use. Erasure deletes the wrapped key (crypto-shredding) exactly as
in the local mode; the KMS key itself is shared and stays.

A keystore that once used KMS remembers it (`kms.json`, the key id) so that a later process
without the variable cannot silently fall back to the local key-encryption key. Keys wrapped
locally before KMS was enabled still open (they carry no `kms1:` prefix).

The endpoint, region and credentials are boto3's usual ones (`AWS_ENDPOINT_URL_KMS` or
`AWS_ENDPOINT_URL`, `AWS_REGION`, ...), which is how the tests point it at moto's server.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .errors import AuditlakeError
from .keys import KeyStore, KeyWrapper, _insert_keys, write_private, keystore_dir

ENV_KEY_ID = "AUDITLAKE_KMS_KEY_ID"
PREFIX = b"kms1:"
MARKER = "kms.json"
_PARALLEL = 16


def kms_client():
    import boto3
    from botocore.config import Config

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return boto3.client("kms", region_name=region,
                        config=Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=_PARALLEL))


class KmsKeyWrapper:
    """A KeyWrapper whose key-encryption key is a KMS key (envelope encryption)."""

    def __init__(self, key_id: str, client=None, fallback: KeyWrapper | None = None):
        if not key_id:
            raise AuditlakeError("a KMS key id is needed")
        self.key_id = key_id
        self._client = client
        self.fallback = fallback

    @property
    def client(self):
        if self._client is None:
            self._client = kms_client()
        return self._client

    @staticmethod
    def context(subject_id: str) -> dict[str, str]:
        return {"subject_id": subject_id}

    def _err(self, what: str, exc: Exception) -> AuditlakeError:
        return AuditlakeError(f"KMS {what} with key {self.key_id} failed: {str(exc).splitlines()[0][:200]}")

    def generate(self, subject_id: str) -> tuple[bytes, bytes]:
        """A fresh data key from KMS: (plaintext, wrapped form to store)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            r = self.client.generate_data_key(KeyId=self.key_id, KeySpec="AES_256",
                                              EncryptionContext=self.context(subject_id))
        except (BotoCoreError, ClientError) as exc:
            raise self._err("GenerateDataKey", exc) from exc
        return r["Plaintext"], PREFIX + r["CiphertextBlob"]

    def wrap(self, subject_id: str, key: bytes) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            r = self.client.encrypt(KeyId=self.key_id, Plaintext=key, EncryptionContext=self.context(subject_id))
        except (BotoCoreError, ClientError) as exc:
            raise self._err("Encrypt", exc) from exc
        return PREFIX + r["CiphertextBlob"]

    def unwrap(self, subject_id: str, wrapped: bytes) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        wrapped = bytes(wrapped)
        if not wrapped.startswith(PREFIX):
            if self.fallback is None:
                raise AuditlakeError(f"the data key of {subject_id} was not wrapped by KMS and no local key can open it")
            return self.fallback.unwrap(subject_id, wrapped)
        try:
            # The ciphertext names its KMS key; the context binds it to this subject.
            r = self.client.decrypt(CiphertextBlob=wrapped[len(PREFIX):], EncryptionContext=self.context(subject_id))
        except (BotoCoreError, ClientError) as exc:
            raise self._err(f"Decrypt of the data key of {subject_id}", exc) from exc
        return r["Plaintext"]

    def unwrap_many(self, items: list[tuple[str, bytes]]) -> dict[str, bytes]:
        """Unwrap many keys with parallel KMS calls."""
        if len(items) <= 2:
            return {sid: self.unwrap(sid, w) for sid, w in items}
        with ThreadPoolExecutor(max_workers=_PARALLEL) as pool:
            keys = list(pool.map(lambda it: self.unwrap(*it), items))
        return {sid: k for (sid, _), k in zip(items, keys)}


class KmsKeyStore(KeyStore):
    """The local keystore with data keys generated and wrapped by KMS."""

    def __init__(self, log_id: str, kms_key_id: str, client=None, root: Path | None = None):
        super().__init__(log_id, root=root)
        self.kms = KmsKeyWrapper(kms_key_id, client=client, fallback=self.wrapper)
        self.wrapper = self.kms
        marker = self.dir / MARKER
        if not marker.exists():
            write_private(marker, json.dumps({"key_id": kms_key_id}))

    def data_keys(self, subject_ids, create: bool = True) -> dict[str, bytes]:
        """As KeyStore.data_keys, with keys made by KMS GenerateDataKey and opened by
        parallel KMS Decrypt calls."""
        ids = sorted(set(subject_ids))
        found: dict[str, bytes] = {}
        con = self._db()
        try:
            def read(chunk_ids: list[str]) -> None:
                rows = []
                for i in range(0, len(chunk_ids), 900):
                    chunk = chunk_ids[i : i + 900]
                    q = f"SELECT subject_id, wrapped FROM datakeys WHERE subject_id IN ({','.join('?' * len(chunk))})"
                    rows.extend(con.execute(q, chunk).fetchall())
                found.update(self.kms.unwrap_many(rows))

            read(ids)
            missing = [s for s in ids if s not in found]
            if create and missing:
                erased = self.is_erased(missing)
                missing = [s for s in missing if s not in erased]
            if create and missing:
                if len(missing) > 2:
                    with ThreadPoolExecutor(max_workers=_PARALLEL) as pool:
                        fresh = list(pool.map(self.kms.generate, missing))
                else:
                    fresh = [self.kms.generate(s) for s in missing]
                if _insert_keys(con, [(s, w) for s, (_, w) in zip(missing, fresh)]):
                    found.update((s, k) for s, (k, _) in zip(missing, fresh))
                else:
                    read(missing)  # a concurrent writer won: use what is stored
        finally:
            con.close()
        return found


def keystore_kms_key(log_id: str) -> str | None:
    """The KMS key id a keystore is bound to, if any."""
    marker = keystore_dir(log_id) / MARKER
    try:
        return json.loads(marker.read_text())["key_id"]
    except (OSError, ValueError, KeyError):
        return None


def select_keystore(log_id: str) -> KeyStore:
    """The keystore of a log: KMS-backed when AUDITLAKE_KMS_KEY_ID is set or the keystore
    was created with KMS, else the local one."""
    key_id = os.environ.get(ENV_KEY_ID) or keystore_kms_key(log_id)
    if not key_id:
        return KeyStore(log_id)
    return KmsKeyStore(log_id, key_id)
