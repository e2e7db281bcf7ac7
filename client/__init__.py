"""The `archq` client commands: the HTTP API's operations from a shell (vm, job, host, image). HTTP only:
no database, no broker, no libvirt."""
