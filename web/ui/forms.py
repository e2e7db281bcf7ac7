"""HTML form fields to the API's request bodies, so the API's schemas validate what the UI sends."""

from __future__ import annotations

from werkzeug.datastructures import MultiDict

OPTIONAL_TEXT = ("host", "hostname", "user_data")


def _number(text: str | None) -> int | str | None:
    """An integer when the field holds one; otherwise the text itself, for the schema to refuse by name."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        return text


def create_body(form: MultiDict) -> dict:
    """The POST /api/v1/vms body the create form describes (empty optional fields left out)."""
    body: dict = {key: (form.get(key) or "").strip() for key in ("name", "arch", "image")}
    for key in ("vcpus", "memory_mib", "disk_gib", "count"):
        if (value := _number(form.get(key))) is not None:
            body[key] = value
    for key in ("emulation", "placement", "cpu_mode", "restart_policy"):
        if form.get(key):
            body[key] = form[key]
    for key in OPTIONAL_TEXT:
        if (form.get(key) or "").strip():
            body[key] = form[key] if key == "user_data" else form[key].strip()
    if form.get("spread") == "on":
        body["spread"] = True
    network = {"mode": form.get("network") or "nat"}
    if network["mode"] == "bridge":
        network["bridge"] = (form.get("bridge") or "").strip()
    body["network"] = network
    body["ssh_authorized_keys"] = [line.strip() for line in (form.get("ssh_keys") or "").splitlines() if line.strip()]
    return body


def field_errors(messages: dict | list, prefix: str = "") -> str:
    """A schema's per-field messages as one line: `vcpus: must be between 1 and 64; network.bridge: ...`."""
    if isinstance(messages, list):
        return f"{prefix}: {' '.join(str(m) for m in messages)}" if prefix else " ".join(str(m) for m in messages)
    parts = [field_errors(value, f"{prefix}.{key}" if prefix else str(key)) for key, value in messages.items()]
    return "; ".join(parts)
