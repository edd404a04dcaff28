"""`sac2real keys new NAME | list`: the Ed25519 keys that sign policy bundles (deploy/signing.py).

A private key stays with whoever gates bundles (default ~/.config/sac2real/keys/, never in the
repository); its public key goes to configs/keys/NAME.pub, is committed, and a robot trusts it when
its deploy config lists the name under `trust.keys`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deploy import signing
from deploy.config import ConfigError, Section, load_yaml


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="make and list the keys that sign policy bundles")
    ksub = p.add_subparsers(dest="keys_command", required=True)
    new = ksub.add_parser("new", help="make a key pair: private key (mode 0600) outside the "
                                      "repository, public key in configs/keys/")
    new.add_argument("name", help="key name: letters, digits, '_', '.', '-'")
    new.add_argument("--dir", type=Path, help=f"private key folder (default ${signing.KEYS_ENV} or "
                                              f"~/.config/sac2real/keys)")
    new.add_argument("--public-dir", type=Path, default=signing.PUBLIC_DIR,
                     help="public key folder (default configs/keys)")
    new.set_defaults(func=_new)
    ls = ksub.add_parser("list", help="public keys, their ids, the robots that trust them and "
                                      "whether their private key is here")
    ls.add_argument("--dir", type=Path, help="private key folder to look in")
    ls.add_argument("--public-dir", type=Path, default=signing.PUBLIC_DIR)
    ls.add_argument("--deploy-dir", type=Path, help="deploy configs to read (default configs/deploy)")
    ls.set_defaults(func=_list)


def _new(args: argparse.Namespace) -> int:
    try:
        private, public = signing.new_key(args.name, args.dir, args.public_dir)
    except signing.SigningError as exc:
        print(f"sac2real keys new: refused: {exc}", file=sys.stderr)
        return 2
    key = signing.load_public(public)
    print(f"key '{args.name}' (id {signing.key_id(key)})\n  private {private} (mode 0600: keep it, "
          f"back it up, never commit it)\n  public  {public}\nA robot trusts it once its deploy "
          f"config says:\n  trust:\n    keys: [{args.name}]\nSign with `sac2real sim2sim BUNDLE "
          f"--sign-key {args.name}` or `sac2real models sign ID --key {args.name}`.")
    return 0


def robots_trusting(deploy_dir: Path) -> tuple[dict[str, list[str]], list[str]]:
    """key id -> robots whose deploy config trusts it; and the configs that could not be read."""
    from deploy.deploy_config import load_trust

    trusted: dict[str, list[str]] = {}
    problems = []
    for path in sorted(deploy_dir.glob("*.yaml")):
        try:
            trust = load_trust(Section(load_yaml(path), path).sub("trust", {}), path)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        for k in trust.keys:
            trusted.setdefault(k.id, []).append(path.stem)
    return trusted, problems


def _list(args: argparse.Namespace) -> int:
    from deploy.deploy_config import DEPLOY_DIR

    trusted, problems = robots_trusting(args.deploy_dir or DEPLOY_DIR)
    private_dir = args.dir or signing.private_dir()
    private = {}
    for path in sorted(private_dir.glob(f"*{signing.PRIVATE_SUFFIX}")) if private_dir.is_dir() else []:
        try:
            private[signing.key_id(signing.load_private(path)[1].public_key())] = path
        except signing.SigningError as exc:
            problems.append(str(exc))
    rows = []
    for path in sorted(args.public_dir.glob(f"*{signing.PUBLIC_SUFFIX}")):
        try:
            kid = signing.key_id(signing.load_public(path))
        except signing.SigningError as exc:
            problems.append(str(exc))
            continue
        rows.append((path.stem, kid, ", ".join(trusted.get(kid, [])) or "-",
                     str(private.pop(kid)) if kid in private else "-"))
    rows += [(p.stem, kid, ", ".join(trusted.get(kid, [])) or "-", f"{p} (no public key in "
              f"{args.public_dir})") for kid, p in private.items()]
    if not rows:
        print(f"no keys in {args.public_dir} or {private_dir}; make one with `sac2real keys new NAME`")
    else:
        print(f"{'name':16s} {'id':16s}  {'trusted by':20s} private key")
        for name, kid, robots, priv in rows:
            print(f"{name:16s} {kid:16s}  {robots:20s} {priv}")
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    return 0
