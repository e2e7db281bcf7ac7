"""Build (or find cached) tiny guests and print their paths.

Usage: python -m workers.guest [--arch amd64|arm64|all] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from queues.arch import ALL, Arch
from queues.config import Settings
from workers.guest.tiny import TinyGuestError, ensure_tiny_guest, marker_line


def default_cache_dir() -> Path:
    return Settings.from_env().images_dir / "tiny"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workers.guest",
        description="Build (or find cached) tiny guests and print their paths.",
    )
    parser.add_argument("--arch", choices=[*(a.value for a in ALL), "all"], default="all")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="default: ${ARCHQ_DATA_DIR:-/var/lib/archq}/images/tiny",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every command run")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    cache_dir = args.cache_dir or default_cache_dir()
    arches = list(ALL) if args.arch == "all" else [Arch(args.arch)]
    for arch in arches:
        try:
            guest = ensure_tiny_guest(arch, cache_dir)
        except TinyGuestError as exc:
            print(f"error: {arch.value} tiny guest: {exc}", file=sys.stderr)
            return 1
        print(f"{arch.value}.kernel={guest.kernel}")
        print(f"{arch.value}.initrd={guest.initrd}")
        print(f"{arch.value}.cmdline={guest.cmdline}")
        print(f"{arch.value}.marker={marker_line(arch)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
