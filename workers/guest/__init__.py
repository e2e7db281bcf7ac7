"""Guest images the workers boot, built from Debian packages: the tiny direct-kernel-boot guest (tiny.py) and
a Debian 12 cloud guest on its own disk (debian.py), sharing their cache and build helpers (build_cache.py)."""
