"""`edgenas space info NAME|FILE` — the choices of a search space, its size and cost range."""
from __future__ import annotations

import argparse
import json

from edgenas.cli import add_common


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "space", help="inspect search spaces",
        description="Inspect a search space: a preset name or a YAML file.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  edgenas space info mbv3-w1.0\n  edgenas space info my-space.yaml --json\n  edgenas space list",
    )
    add_common(parser)
    sub = parser.add_subparsers(dest="space_command", metavar="ACTION", required=True)
    info = sub.add_parser("info", help="choices, number of subnets, MACs/params range")
    info.add_argument("space", metavar="NAME|FILE", help="preset name (see `edgenas space list`) or space YAML file")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_common(info)
    info.set_defaults(run=run_info)
    listing = sub.add_parser("list", help="list the shipped presets")
    add_common(listing)
    listing.set_defaults(run=run_list)


def run_info(args) -> int:
    from edgenas.space import arch_cost, largest, load_space, smallest

    space = load_space(args.space)
    lo, hi = arch_cost(space, smallest(space)), arch_cost(space, largest(space))
    if args.json:
        print(json.dumps({
            "space": space.to_dict(), "hash": space.hash, "num_subnets": space.num_subnets(),
            "macs": [lo.macs, hi.macs], "params": [lo.params, hi.params],
            "peak_activation_bytes": [lo.peak_activation_bytes, hi.peak_activation_bytes],
        }, indent=2))
        return 0
    print(space.describe())
    print(f"  subnets:       {space.num_subnets():.3e} ({space.num_subnets():,})")
    print(f"  MACs:          {lo.macs / 1e6:.1f} M (smallest) .. {hi.macs / 1e6:.1f} M (largest)")
    print(f"  params:        {lo.params / 1e6:.2f} M .. {hi.params / 1e6:.2f} M")
    print(f"  peak act.:     {lo.peak_activation_bytes / 1024:.0f} KiB .. {hi.peak_activation_bytes / 1024:.0f} KiB (fp32)")
    return 0


def run_list(args) -> int:
    from edgenas.space import load_space, preset_names

    for name in preset_names():
        space = load_space(name)
        print(f"{name:12s} {len(space.units)} units, resolutions {space.resolutions[0]}-{space.resolutions[-1]}, {space.num_classes} classes")
    return 0
