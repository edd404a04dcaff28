"""The policy registry: bundles under `models/policies/<robot>/<id>/` and one "current" pointer per
robot, `models/policies/<robot>/current.json`.

A bundle becomes current only by `promote`, which re-verifies it against the robot's spec and
requires a passing sim2sim verdict recorded for this very content (its onnx sha256 and spec hash).
The pointer is replaced atomically (write a temporary file, fsync, rename), so a reader sees the old
pointer or the new one, never a torn one. The root is `models/policies/` in the repository unless
`SAC2REAL_MODELS` or an explicit root says otherwise."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from deploy import bundle as B
from deploy.signing import TrustCheck
from deploy.spec import REPO_ROOT, RobotSpec

ENV_VAR = "SAC2REAL_MODELS"
POINTER_FILE = "current.json"
CURRENT = "current"   # the name that resolves to a robot's current bundle


def default_root() -> Path:
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else REPO_ROOT / "models" / "policies"


class RegistryError(ValueError):
    """A registry request is refused; the message says which bundle or robot and why."""


@dataclass
class BundleEntry:
    """One bundle folder as listed (read leniently: a damaged bundle is listed with its error)."""

    robot: str
    id: str
    path: Path
    meta: dict | None
    error: str | None = None

    @property
    def created(self) -> str:
        return (self.meta or {}).get("created", "?")

    @property
    def env_steps(self) -> int | None:
        return ((self.meta or {}).get("training") or {}).get("env_steps")

    @property
    def sim2sim(self) -> str:
        if self.meta is None:
            return "?"
        v = self.meta.get("sim2sim")
        if v is None:
            return "none"
        return "passed" if v.get("passed") is True else "failed"


class PolicyRegistry:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_root()

    # ---- listing ---------------------------------------------------------------------------
    def robots(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def bundles(self, robot: str | None = None) -> list[BundleEntry]:
        """Every bundle folder (oldest first, ids sort by time), hidden work folders excluded."""
        out = []
        for r in ([robot] if robot else self.robots()):
            folder = self.root / r
            if not folder.is_dir():
                continue
            for p in sorted(folder.iterdir()):
                if not p.is_dir() or p.name.startswith("."):
                    continue
                try:
                    out.append(BundleEntry(r, p.name, p, B.read_meta(p)))
                except B.BundleError as exc:
                    out.append(BundleEntry(r, p.name, p, None, str(exc)))
        return out

    def resolve(self, ref: str, robot: str | None = None, external: bool = True) -> Path:
        """A bundle folder from `current` (the robot's current bundle; needs `robot`), `ID`,
        `ROBOT/ID`, a unique ID prefix, or a path to a bundle. The one resolver behind the CLI,
        the ROS 2 node, the launch files and preflight, so a name that works in one works in all.
        `external=False` refuses a folder that is not a bundle of this registry (`<root>/<robot>/
        <id>`, symbolic links resolved): what a robot's operator interface accepts by default."""
        path = self._resolve(ref, robot)
        if not external and not self.holds(path):
            raise RegistryError(f"'{ref}' resolves to {path}, which is not a bundle in the registry "
                                f"{self.root} (external bundles are refused here: copy it into the "
                                f"registry, or allow external bundles)")
        return path

    def holds(self, path: str | Path) -> bool:
        """`path` is a bundle folder of this registry: <root>/<robot>/<id>, links resolved."""
        real, root = Path(path).resolve(), self.root.resolve()
        return real.parent.parent == root and not real.name.startswith(".") \
            and not real.parent.name.startswith(".")

    def _resolve(self, ref: str, robot: str | None) -> Path:
        if ref == CURRENT:
            if robot is None:
                raise RegistryError(f"'{CURRENT}' names a robot's current bundle: say which robot")
            path = self.current(robot)
            if path is None:
                raise RegistryError(f"robot '{robot}' has no current bundle under {self.root} "
                                    f"(promote one with `sac2real models promote ID`, or name a bundle)")
            return path
        direct = Path(ref)
        if direct.is_dir() and (direct / B.META_FILE).exists():
            return direct
        robot, _, ident = ref.rpartition("/")
        entries = self.bundles(robot or None)
        exact = [e for e in entries if e.id == ident]
        matches = exact or [e for e in entries if e.id.startswith(ident)]
        if len(matches) == 1:
            return matches[0].path
        if not matches:
            raise RegistryError(f"no bundle '{ref}' under {self.root}")
        raise RegistryError(f"'{ref}' is ambiguous under {self.root}: "
                            f"{', '.join(f'{e.robot}/{e.id}' for e in matches)}")

    # ---- checks ----------------------------------------------------------------------------
    def verify(self, ref: str, spec: RobotSpec | None = None, providers: Sequence | str = "auto",
               trust: TrustCheck | None = None) -> B.PolicyBundle:
        """Full load: manifest, spec, layout, golden pairs (and the signature, with `trust`). The
        spec defaults to the robot's current spec in configs/robots."""
        path = self.resolve(ref)
        if spec is None:
            spec = RobotSpec.load(B.read_meta(path)["robot"]["name"])
        return B.PolicyBundle.load(path, spec, providers=providers, trust=trust)

    # ---- the current pointer ---------------------------------------------------------------
    def pointer(self, robot: str) -> dict | None:
        path = self.root / robot / POINTER_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (ValueError, RecursionError) as exc:     # JSONDecodeError, UnicodeDecodeError
            raise RegistryError(f"{path}: not valid JSON ({type(exc).__name__}: {str(exc)[:200]})") from exc
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise RegistryError(f"{path}: expected {{\"id\": ...}}, found {data!r}")
        return data

    def current(self, robot: str) -> Path | None:
        """The folder of the robot's current bundle, or None if none was promoted."""
        data = self.pointer(robot)
        if data is None:
            return None
        path = self.root / robot / data["id"]
        if not path.is_dir():
            raise RegistryError(f"{self.root / robot / POINTER_FILE}: points to {data['id']}, "
                                f"which is not in {self.root / robot}")
        return path

    def promote(self, ref: str, spec: RobotSpec | None = None) -> B.PolicyBundle:
        """Make a verified bundle with a passing sim2sim verdict for its own content current."""
        bundle = self.verify(ref, spec, providers="cpu")
        self.check_verdict(bundle)
        self._write_pointer(bundle)
        return bundle

    def sign(self, ref: str, key: str | Path, spec: RobotSpec | None = None) -> dict:
        """Sign a verified bundle that has a passing sim2sim verdict for its own content (what the
        gate does with --sign-key, for a bundle gated without a key). Returns the signature."""
        bundle = self.verify(ref, spec, providers="cpu")
        self.check_verdict(bundle)
        return B.sign_bundle(bundle.path, key)

    @staticmethod
    def check_verdict(bundle: B.PolicyBundle) -> None:
        """Refuse a bundle without a passing sim2sim verdict recorded for this very content."""
        verdict = bundle.sim2sim
        where = f"{bundle.robot}/{bundle.id}"
        if verdict is None:
            raise RegistryError(
                f"{where}: promotion and signing need a passing sim2sim verdict recorded in the "
                f"bundle and this bundle has none (sim2sim: null); run `sac2real sim2sim` first")
        verdict = B.validate_verdict(verdict, bundle.path)
        if verdict["passed"] is not True:
            raise RegistryError(f"{where}: its sim2sim verdict failed (report "
                                f"{verdict['report']}, {verdict['created']})")
        if verdict["onnx_sha256"] != bundle.onnx_sha256:
            raise RegistryError(f"{where}: the sim2sim verdict was recorded for onnx "
                                f"{verdict['onnx_sha256'][:16]}..., the bundle holds "
                                f"{bundle.onnx_sha256[:16]}...")
        if verdict["spec_hash"] != bundle.spec_hash:
            raise RegistryError(f"{where}: the sim2sim verdict was recorded for spec "
                                f"{verdict['spec_hash'][:12]}, the bundle is for {bundle.spec_hash[:12]}")

    def _write_pointer(self, bundle: B.PolicyBundle) -> None:
        robot = bundle.robot
        if bundle.path.resolve().parent != (self.root / robot).resolve():
            raise RegistryError(f"{bundle.path} is not inside {self.root / robot}; only a bundle in "
                                f"the registry can be promoted")
        if bundle.path.name != bundle.id:
            raise RegistryError(f"{bundle.path}: folder name differs from the bundle id {bundle.id}")
        previous = self.pointer(robot)
        data = {"id": bundle.id, "onnx_sha256": bundle.onnx_sha256, "spec_hash": bundle.spec_hash,
                "promoted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "previous": previous["id"] if previous else None}
        B.atomic_write_text(self.root / robot / POINTER_FILE, B.dump_json(data))
