"""Hypervisor-side Celery workers: they drive QEMU through libvirt and report back through the broker."""
