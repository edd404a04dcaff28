"""Signed bundles: who vouches for a bundle, and which robots believe them.

The sim2sim gate (or `sac2real models sign`) signs a bundle's content and its verdict with an
Ed25519 private key; a robot's deploy config lists the public keys it trusts (`trust:` section).
On a hardware backend a bundle is driven only with a valid signature from a trusted key, so a
bundle made self-consistent by hand (ONNX changed, golden pairs, manifest and verdict recomputed,
as anyone with this code can) is refused: only the holder of a private key can sign.

What is signed (`signed` in signature.json, as canonical JSON after a fixed prefix):

    bundle, robot         the bundle id and robot
    manifest_sha256       sha256 of the manifest's canonical text: every file of the bundle,
                          policy.json with its verdict included, by its own sha256
    onnx_sha256, spec_hash
    verdict               passed / created / report of the recorded sim2sim verdict (or null)

signature.json sits beside manifest.sha256 and, like it, is not listed in the manifest.

Keys (decided here, documented in the README):
    private  <key dir>/<name>.key   PEM PKCS#8, mode 0600; key dir ~/.config/sac2real/keys or
                                    $SAC2REAL_KEYS; never inside the repository
    public   configs/keys/<name>.pub  PEM SubjectPublicKeyInfo (`openssl pkey -pubin` reads it);
                                    committed, and named by the robots' deploy configs
A key's id is the first 16 hex digits of the sha256 of its 32 raw public bytes."""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from deploy.spec import REPO_ROOT

SIGNATURE_FILE = "signature.json"
SIGNATURE_FORMAT = 1
ALGORITHM = "ed25519"
DOMAIN = b"sac2real bundle signature v1\n"     # a signature of anything else never verifies here
PUBLIC_DIR = REPO_ROOT / "configs" / "keys"
KEYS_ENV = "SAC2REAL_KEYS"
SIGN_KEY_ENV = "SAC2REAL_SIGN_KEY"
PRIVATE_SUFFIX, PUBLIC_SUFFIX = ".key", ".pub"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class SigningError(ValueError):
    """A key cannot be made, found or read; the message names the file and what is wrong."""


def private_dir() -> Path:
    """Where private keys live: $SAC2REAL_KEYS, else ~/.config/sac2real/keys (outside the repo)."""
    env = os.environ.get(KEYS_ENV)
    return Path(env).expanduser() if env else Path.home() / ".config" / "sac2real" / "keys"


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise SigningError(f"key name {name!r}: use 1-64 letters, digits, '_', '.', '-' "
                        f"(not starting with '.' or '-')")
    return name


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _inside_repo(path: Path) -> bool:
    try:
        path.resolve().relative_to(REPO_ROOT.resolve())
        return True
    except ValueError:
        return False


def new_key(name: str, key_dir: Path | None = None, public_dir: Path = PUBLIC_DIR) -> tuple[Path, Path]:
    """Make a key pair: the private key (0600, in a 0700 folder outside the repository) and its
    public key. Never overwrites a key. Returns (private path, public path)."""
    check_name(name)
    key_dir = Path(key_dir) if key_dir is not None else private_dir()
    if _inside_repo(key_dir):
        raise SigningError(f"{key_dir}: a private key inside the repository ({REPO_ROOT}) would be "
                        f"committed; choose a folder outside it")
    private, public = key_dir / f"{name}{PRIVATE_SUFFIX}", Path(public_dir) / f"{name}{PUBLIC_SUFFIX}"
    for path in (private, public):
        if path.exists():
            raise SigningError(f"{path} exists; a key is never overwritten (pick another name)")
    key = Ed25519PrivateKey.generate()
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    Path(public_dir).mkdir(parents=True, exist_ok=True)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def find_private(ref: str | Path) -> Path:
    """A private key from a path, or a name in the private key folder."""
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    if NAME_RE.match(str(ref)):
        named = private_dir() / f"{ref}{PRIVATE_SUFFIX}"
        if named.is_file():
            return named
        raise SigningError(f"no private key '{ref}' ({named} not found; make one with "
                        f"`sac2real keys new {ref}`)")
    raise SigningError(f"{path}: private key file not found")


def load_private(ref: str | Path) -> tuple[str, Ed25519PrivateKey]:
    """(name, key) of a private key file; the name is the file's stem."""
    path = find_private(ref)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"{path}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{path}: an {type(key).__name__}, not an Ed25519 key")
    if path.stat().st_mode & 0o077:
        raise SigningError(f"{path}: readable by others (mode {path.stat().st_mode & 0o777:o}); "
                        f"chmod 600 it")
    return path.name.removesuffix(PRIVATE_SUFFIX), key


def load_public(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise SigningError(f"{path}: not a readable PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError(f"{path}: an {type(key).__name__}, not an Ed25519 public key")
    return key


@dataclass(frozen=True)
class TrustedKey:
    name: str
    id: str
    key: Ed25519PublicKey
    source: str


@dataclass(frozen=True)
class TrustConfig:
    """The `trust:` section of a deploy config. `require_signature` None = automatic: required
    on hardware backends (unitree, ros2), not on the MuJoCo backend."""

    require_signature: bool | None = None
    keys: tuple[TrustedKey, ...] = ()
    source: str = "<defaults: no trusted keys>"

    def required(self, hardware: bool) -> bool:
        return hardware if self.require_signature is None else self.require_signature

    def described(self) -> str:
        if not self.keys:
            return f"this robot trusts no key (trust.keys is empty in {self.source})"
        return "this robot trusts " + ", ".join(f"'{k.name}' (id {k.id})" for k in self.keys)


def resolve_public(entry: str, config_dir: Path) -> Path:
    """A `trust.keys` entry: a name in configs/keys, or a path (relative to the deploy config)."""
    if NAME_RE.match(entry) and not entry.endswith(PUBLIC_SUFFIX):
        return PUBLIC_DIR / f"{entry}{PUBLIC_SUFFIX}"
    path = Path(entry).expanduser()
    return path if path.is_absolute() else config_dir / path


def trusted_keys(entries: list[str], config_dir: Path) -> tuple[TrustedKey, ...]:
    out = []
    for entry in entries:
        path = resolve_public(entry, config_dir)
        key = load_public(path)
        out.append(TrustedKey(path.name.removesuffix(PUBLIC_SUFFIX), key_id(key), key, str(path)))
    return tuple(out)


# ---- the signed content -------------------------------------------------------------------------
def manifest_digest(manifest: dict[str, str]) -> str:
    """sha256 of the manifest's canonical text (sorted `<sha256>  <name>` lines)."""
    text = "".join(f"{manifest[n]}  {n}\n" for n in sorted(manifest))
    return hashlib.sha256(text.encode()).hexdigest()


def signed_content(meta: dict, manifest: dict[str, str]) -> dict:
    """What a signature covers, computed from a bundle's policy.json and manifest entries."""
    onnx_file = (meta.get("onnx") or {}).get("file")
    verdict = meta.get("sim2sim")
    short = None if not isinstance(verdict, dict) else \
        {k: verdict.get(k) for k in ("passed", "created", "report")}
    return {"bundle": meta.get("id"), "robot": (meta.get("robot") or {}).get("name"),
            "manifest_sha256": manifest_digest(manifest), "onnx_sha256": manifest.get(onnx_file),
            "spec_hash": (meta.get("robot") or {}).get("spec_hash"), "verdict": short}


def _canonical(content: dict) -> bytes:
    return DOMAIN + json.dumps(content, sort_keys=True, separators=(",", ":")).encode()


def make_signature(content: dict, name: str, key: Ed25519PrivateKey) -> dict:
    return {"format": SIGNATURE_FORMAT, "algorithm": ALGORITHM,
            "key": {"name": name, "id": key_id(key.public_key())}, "signed": content,
            "signature": base64.b64encode(key.sign(_canonical(content))).decode()}


def read_signature(bundle_dir: Path) -> dict | None:
    """signature.json as a dict, None when absent; a malformed one is returned as
    {"malformed": reason} so that the trust check names it (loading never fails on it alone)."""
    path = Path(bundle_dir) / SIGNATURE_FILE
    if not path.is_file():
        return None
    try:
        sig = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as exc:    # UnicodeDecodeError is a ValueError
        return {"malformed": f"not valid JSON ({type(exc).__name__}: {str(exc)[:80]})"}
    shape = {"format": int, "algorithm": str, "key": dict, "signed": dict, "signature": str}
    for k, kind in shape.items():
        if not isinstance(sig, dict) or not isinstance(sig.get(k), kind):
            return {"malformed": f"'{k}' missing or not a {kind.__name__}"}
    if sig["format"] != SIGNATURE_FORMAT or sig["algorithm"] != ALGORITHM:
        return {"malformed": f"format {sig['format']!r} / algorithm {sig['algorithm']!r}, expected "
                             f"{SIGNATURE_FORMAT} / {ALGORITHM}"}
    if not isinstance(sig["key"].get("id"), str) or not isinstance(sig["key"].get("name"), str):
        return {"malformed": "key.id and key.name must be strings"}
    return sig


def _first_change(signed: dict, actual: dict) -> str:
    """The first field where two different signed contents differ."""
    k = next(k for k in sorted(set(signed) | set(actual)) if signed.get(k) != actual.get(k))
    return (f"{k} signed {str(signed.get(k))[:40]!r}, bundle {str(actual.get(k))[:40]!r} "
            f"(the bundle changed after it was signed)")


def signature_problem(signature: dict | None, content: dict, trust: TrustConfig) -> str | None:
    """None when `signature` is a valid signature of `content` by a key `trust` lists and the
    signed verdict passed; else what is wrong, starting with how the signature fails."""
    if signature is None:
        return (f"missing: the bundle is unsigned ({SIGNATURE_FILE} absent) and {trust.described()}; "
                f"sign it with `sac2real models sign ID --key NAME` or gate it with --sign-key")
    if "malformed" in signature:
        return f"malformed {SIGNATURE_FILE}: {signature['malformed']}"
    who = signature["key"]
    trusted = {k.id: k for k in trust.keys}
    if who["id"] not in trusted:
        return (f"not from a trusted key: signed by '{who['name']}' (id {who['id']}), "
                f"{trust.described()}")
    name = trusted[who["id"]].name
    if signature["signed"] != content:
        return f"does not match the content (key '{name}'): {_first_change(signature['signed'], content)}"
    try:
        raw = base64.b64decode(signature["signature"], validate=True)
        trusted[who["id"]].key.verify(raw, _canonical(content))
    except (InvalidSignature, binascii.Error, ValueError):
        return (f"does not match the content (key '{name}'): the signed fields agree, so the "
                f"signature bytes themselves were altered")
    verdict = content["verdict"]
    if not verdict or verdict.get("passed") is not True:
        return "valid, but the signed sim2sim verdict is not a pass (bundles are trusted only gated)"
    return None


@dataclass
class TrustCheck:
    """The trust rule one controller applies: its config and whether its backend drives hardware."""

    config: TrustConfig = field(default_factory=TrustConfig)
    hardware: bool = False

    @classmethod
    def for_backend(cls, config: TrustConfig, backend: Any) -> "TrustCheck":
        from deploy.backends.hardware_link import HardwareLink
        return cls(config, isinstance(backend, HardwareLink))

    @property
    def required(self) -> bool:
        return self.config.required(self.hardware)

    def problem(self, bundle: Any) -> str | None:
        """Why a loaded PolicyBundle may not drive this robot, or None. Uses what the bundle
        read at load (its manifest, meta and signature), so a swap never reads the disk."""
        if not self.required:
            return None
        meta, manifest = getattr(bundle, "meta", None), getattr(bundle, "manifest", None)
        if not isinstance(meta, dict) or not isinstance(manifest, dict):
            return f"missing: {type(bundle).__name__} is not a loaded bundle with a manifest"
        return signature_problem(getattr(bundle, "signature", None), signed_content(meta, manifest),
                                 self.config)
