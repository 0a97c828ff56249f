"""Signed checkpoints: a log's size, Merkle root and chain head, linked and Ed25519-signed."""
from __future__ import annotations

import base64
import hashlib
from dataclasses import asdict, dataclass, replace

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .canonical import canonical_json

ZERO_HASH = "0" * 64
SIGNED_FIELDS = ("log_id", "tree_size", "root", "chain_head", "time", "prev_checkpoint_hash", "key_id")


@dataclass(frozen=True)
class Checkpoint:
    log_id: str
    tree_size: int
    root: str
    chain_head: str
    time: str
    prev_checkpoint_hash: str
    key_id: str
    signature: str = ""

    def body(self) -> bytes:
        """The signed bytes: JCS of the fields in SIGNED_FIELDS."""
        return canonical_json({k: getattr(self, k) for k in SIGNED_FIELDS})

    @property
    def checkpoint_hash(self) -> str:
        return hashlib.sha256(canonical_json(self.to_dict(with_hash=False))).hexdigest()

    def signed(self, key: Ed25519PrivateKey) -> "Checkpoint":
        return replace(self, signature=base64.b64encode(key.sign(self.body())).decode())

    def signature_valid(self, public_key: Ed25519PublicKey) -> bool:
        try:
            public_key.verify(base64.b64decode(self.signature, validate=True), self.body())
            return True
        except (InvalidSignature, ValueError):
            return False

    def to_dict(self, with_hash: bool = True) -> dict:
        d = asdict(self)
        if with_hash:
            d["checkpoint_hash"] = self.checkpoint_hash
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Checkpoint":
        cp = cls(**{k: d[k] for k in (*SIGNED_FIELDS, "signature")})
        if "checkpoint_hash" in d and d["checkpoint_hash"] != cp.checkpoint_hash:
            raise ValueError("checkpoint_hash does not match the checkpoint's fields")
        return cp
