"""Looking at and clearing away domains on the real libvirtd (qemu:///system) behind archq's back, for
tests that check what archq left there or must not leave a guest behind when they fail."""

from __future__ import annotations

import libvirt

SYSTEM = "qemu:///system"


def _lookup(conn: libvirt.virConnect, key: str) -> libvirt.virDomain:
    # A VM's id is its domain's UUID; anything else is a domain name.
    return conn.lookupByUUIDString(key) if len(key) == 36 and key.count("-") == 4 else conn.lookupByName(key)


def domain_exists(key: str) -> bool:
    conn = libvirt.open(SYSTEM)
    try:
        _lookup(conn, key)
        return True
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()


def force_remove(key: str) -> None:
    """Destroy and undefine the domain (by VM id or domain name) with its snapshots and NVRAM, if it exists."""
    conn = libvirt.open(SYSTEM)
    try:
        dom = _lookup(conn, key)
        if dom.isActive():
            dom.destroy()
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    except libvirt.libvirtError:
        pass
    finally:
        conn.close()


def remove_domains_under(directory: str) -> list[str]:
    """Destroy and undefine every domain whose XML names a file under `directory` (a test's data dir): what a
    test's workers created, even one a reconciler restarted while the test was cleaning up. Their names."""
    conn = libvirt.open(SYSTEM)
    removed = []
    try:
        for dom in conn.listAllDomains():
            try:
                if directory not in dom.XMLDesc(0):
                    continue
                removed.append(dom.name())
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            except libvirt.libvirtError:
                continue  # gone meanwhile
    finally:
        conn.close()
    return removed
