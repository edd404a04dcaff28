"""`sac2real models list | show ID | verify ID | promote ID | sign ID --key KEY | current ROBOT`: the policy registry
(deploy/registry.py). No torch: every command runs on the robot computer."""
from __future__ import annotations

import argparse
import json
import sys

from deploy.bundle import MANIFEST_FILE, BundleError, read_manifest, read_meta
from deploy.config import ConfigError
from deploy.registry import ENV_VAR, PolicyRegistry, RegistryError
from deploy.signing import SigningError, read_signature


def register(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", help=f"registry root (default ${ENV_VAR} or models/policies)")
    p = sub.add_parser("models", help="list, inspect, verify and promote exported policy bundles")
    msub = p.add_subparsers(dest="models_command", required=True)
    ls = msub.add_parser("list", parents=[common], help="bundles, newest last, * = current")
    ls.add_argument("--robot", help="only this robot's bundles")
    ls.set_defaults(func=_guarded(_list))
    show = msub.add_parser("show", parents=[common], help="what a bundle holds")
    show.add_argument("id", help="bundle id, ROBOT/ID, a unique id prefix or a bundle folder")
    show.add_argument("--json", action="store_true", help="print policy.json as stored")
    show.set_defaults(func=_guarded(_show))
    for name, func, text in (("verify", _verify, "check manifest, spec, layout and golden pairs"),
                             ("promote", _promote, "make a verified bundle with a passing sim2sim "
                                                   "verdict its robot's current policy")):
        q = msub.add_parser(name, parents=[common], help=text)
        q.add_argument("id", help="bundle id, ROBOT/ID, a unique id prefix or a bundle folder")
        q.add_argument("--spec", help="robot spec name or YAML to check against (default: the "
                                      "bundle's robot in configs/robots)")
        if name == "verify":
            q.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"),
                           help="onnxruntime execution provider for the golden pairs")
            q.add_argument("--signed", action="store_true",
                           help="also check the signature as a hardware backend does, against "
                                "the keys the robot's deploy config trusts")
            q.add_argument("--deploy-config", help="deploy config for --signed (default "
                                                   "configs/deploy/<robot>.yaml)")
        q.set_defaults(func=_guarded(func))
    sign = msub.add_parser("sign", parents=[common], help="sign a verified bundle with a passing "
                                                         "sim2sim verdict (hardware backends drive "
                                                         "only bundles signed by a key they trust)")
    sign.add_argument("id", help="bundle id, ROBOT/ID, a unique id prefix or a bundle folder")
    sign.add_argument("--key", required=True, help="private key: a name in $SAC2REAL_KEYS or "
                                                   "~/.config/sac2real/keys, or a path")
    sign.add_argument("--spec", help="robot spec name or YAML to check against")
    sign.set_defaults(func=_guarded(_sign))
    cur = msub.add_parser("current", parents=[common], help="the robot's current bundle")
    cur.add_argument("robot")
    cur.set_defaults(func=_guarded(_current))


def _guarded(func):
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (BundleError, RegistryError, ConfigError, SigningError) as exc:
            print(f"sac2real models {args.models_command}: refused: {exc}", file=sys.stderr)
            return 2
    return run


def _spec(args):
    if not getattr(args, "spec", None):
        return None
    from deploy.spec import RobotSpec
    return RobotSpec.load(args.spec)


def _list(args: argparse.Namespace) -> int:
    reg = PolicyRegistry(args.root)
    entries = reg.bundles(args.robot)
    if not entries:
        print(f"no bundles under {reg.root}")
        return 0
    current = {}
    for robot in {e.robot for e in entries}:
        try:
            current[robot] = (reg.pointer(robot) or {}).get("id")
        except RegistryError:
            current[robot] = None
    print(f"  {'robot':10s} {'id':26s} {'created':20s} {'env steps':>10s}  sim2sim")
    for e in entries:
        mark = "*" if current.get(e.robot) == e.id else " "
        if e.error:
            print(f"{mark} {e.robot:10s} {e.id:26s} unreadable: {e.error}")
            continue
        steps = "?" if e.env_steps is None else str(e.env_steps)
        print(f"{mark} {e.robot:10s} {e.id:26s} {e.created:20s} {steps:>10s}  {e.sim2sim}")
    return 0


def _show(args: argparse.Namespace) -> int:
    reg = PolicyRegistry(args.root)
    path = reg.resolve(args.id)
    meta = read_meta(path)
    if args.json:
        print(json.dumps(meta, indent=1))
        return 0
    robot = meta["robot"]["name"]
    try:
        is_current = (reg.pointer(robot) or {}).get("id") == meta["id"]
    except RegistryError:
        is_current = False
    tr, par, obs, act = meta["training"], meta["parent"], meta["observation"], meta["action"]
    print(f"bundle {robot}/{meta['id']}{'  (current)' if is_current else ''}\n  path {path}")
    onnx = meta["onnx"]
    print(f"  created {meta['created']}  {onnx.get('exporter', '')}, opset {onnx.get('opset')}")
    print(f"  robot {robot}  spec hash {meta['robot']['spec_hash']}")
    print(f"  parent {par['checkpoint']}\n         sha256 {par['sha256']}")
    print(f"  training task {tr.get('task')}, iteration {tr.get('iteration')}, env steps "
          f"{tr['env_steps']}, updates {tr.get('updates')}; actor "
          f"{tr['config'].get('sac', {}).get('actor_hidden')}")
    terms = ", ".join(f"{e['name']}[{e['offset']}:{e['offset'] + e['dim']}]" for e in obs["layout"])
    print(f"  observation dim {obs['dim']} hash {obs['hash'][:12]}: {terms}")
    print(f"  action dim {act['dim']}, scale {act['scale']}, policy dt {meta['timing']['policy_dt']} s")
    print(f"  {'#':>2} {'joint':28s} {'default':>8} {'action bounds':>19} {'kp':>6} {'kd':>5}")
    for i, name in enumerate(meta["joints"]):
        print(f"  {i:2d} {name:28s} {act['default_pos'][i]:8.3f} [{act['low'][i]:7.3f},"
              f"{act['high'][i]:7.3f}] {meta['gains']['kp'][i]:6.1f} {meta['gains']['kd'][i]:5.2f}")
    parity = meta.get("parity", {})
    checks = ", ".join(f"{k} {v['count']} max |diff| {v['max_abs_diff']:.1e}"
                       for k, v in parity.items() if isinstance(v, dict) and "max_abs_diff" in v)
    print(f"  golden pairs {len(meta['golden']['obs'])}; export parity vs PyTorch: {checks or 'n/a'}")
    v = meta["sim2sim"]
    print("  sim2sim: none (cannot be promoted)" if v is None else
          f"  sim2sim: {'passed' if v.get('passed') is True else 'FAILED'} ({v.get('created')}, "
          f"report {v.get('report')})")
    sig = read_signature(path)
    print("  signature: none (hardware backends refuse it)" if sig is None else
          f"  signature: malformed ({sig['malformed']})" if "malformed" in sig else
          f"  signature: key '{sig['key']['name']}' (id {sig['key']['id']}); checked against a "
          f"robot's trusted keys when it loads")
    try:
        files = read_manifest(path)
        print(f"  {MANIFEST_FILE}: " + ", ".join(f"{n} {d[:12]}" for n, d in files.items()))
    except BundleError as exc:
        print(f"  {MANIFEST_FILE}: {exc}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    reg = PolicyRegistry(args.root)
    spec, trust = _spec(args), None
    if args.signed:
        from deploy.deploy_config import DeployConfig
        from deploy.signing import TrustCheck
        from deploy.spec import RobotSpec

        spec = spec or RobotSpec.load(read_meta(reg.resolve(args.id))["robot"]["name"])
        trust = TrustCheck(DeployConfig.load(spec, args.deploy_config).trust, hardware=True)
    bundle = reg.verify(args.id, spec, providers=args.device, trust=trust)
    print(f"ok: {bundle.robot}/{bundle.id} ({bundle.path})\n  manifest {len(bundle.manifest)} files "
          f"unchanged; spec {bundle.spec_hash[:12]}, {bundle.act_dim} joints in order, obs "
          f"{bundle.obs_dim} (layout {bundle.layout_hash[:12]}), dt {bundle.policy_dt} s, gains agree; "
          f"{len(bundle.meta['golden']['obs'])} golden pairs within {bundle.golden_error:.1e} on "
          f"{bundle.providers[0]}" + (f"; signed by trusted key '{bundle.signature['key']['name']}'"
                                      if trust else ""))
    return 0


def _promote(args: argparse.Namespace) -> int:
    reg = PolicyRegistry(args.root)
    bundle = reg.promote(args.id, _spec(args))
    data = reg.pointer(bundle.robot) or {}
    print(f"{bundle.robot}: current is now {bundle.id} (was {data.get('previous') or 'none'})")
    return 0


def _sign(args: argparse.Namespace) -> int:
    sig = PolicyRegistry(args.root).sign(args.id, args.key, _spec(args))
    print(f"signed {sig['signed']['robot']}/{sig['signed']['bundle']} with key '{sig['key']['name']}' "
          f"(id {sig['key']['id']}): manifest {sig['signed']['manifest_sha256'][:16]}..., verdict "
          f"passed {sig['signed']['verdict']['created']}")
    return 0


def _current(args: argparse.Namespace) -> int:
    reg = PolicyRegistry(args.root)
    path = reg.current(args.robot)
    if path is None:
        print(f"{args.robot}: no current bundle (none promoted under {reg.root})")
        return 1
    data = reg.pointer(args.robot) or {}
    print(f"{args.robot}: {path.name}  (promoted {data.get('promoted')}, previous "
          f"{data.get('previous') or 'none'})\n  {path}")
    return 0
