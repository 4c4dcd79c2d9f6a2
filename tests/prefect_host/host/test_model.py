"""The declarations themselves: how steps name units and files, and the digests an applied record holds."""

from __future__ import annotations

import hashlib

from prefect_host.host.model import File, Service, Units, display_units, sha256_text
from tests.prefect_host.host.host_samples import WEB_VENV, web_service


def sha(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def test_display_units_shortens_template_instances():
    assert display_units(["prefect-worker@1.service"]) == "prefect-worker@1"
    assert (
        display_units(("prefect-worker@1.service", "prefect-worker@2.service", "prefect-worker@10.service"))
        == "prefect-worker@{1,2,10}"
    )
    assert display_units(["caddy.service"]) == "caddy.service"
    assert display_units(["a.service", "b.service"]) == "a.service b.service"
    assert display_units([]) == ""


def test_file_steps_are_named_after_the_path_unless_described():
    assert File("/etc/a.conf", "x").step_name == "write /etc/a.conf"
    assert File("/etc/a.conf", None).step_name == "remove /etc/a.conf"
    assert File("/etc/a.conf", "x", describe="configure a").step_name == "configure a"
    assert "x" not in repr(File("/etc/secret.env", "x"))  # file text may be a secret: never in a repr


def test_restart_digest_is_the_version_then_the_restart_files_in_declared_order():
    web = web_service()
    unit, config, retired = (f.text or "" for f in web.files if f.on_change == "restart")
    assert web.restart_digest() == sha("1.0", unit, config, retired)
    # Files that reload or trigger nothing are not part of it; without a version, the files alone are.
    assert web_service(site="site B\n", notes="other\n").restart_digest() == web.restart_digest()
    assert Service("x", files=(File("/a", "A"), File("/b", "B"))).restart_digest() == sha("A", "B")


def test_applied_record_holds_the_reload_digest_only_for_reloadable_units():
    web = web_service()
    assert web.reload_digest() == sha256_text("site A\n")
    assert web.applied_record() == f"{web.restart_digest()} {web.reload_digest()}"
    plain = Service("x", files=(File("/a", "A"),), units=Units(("x.service",), applied="/x.applied", display="x"))
    assert plain.applied_record() == plain.restart_digest() == sha("A")


def test_venv_paths_and_pins():
    assert WEB_VENV.python == "/opt/web/venv/bin/python"
    assert WEB_VENV.bytecode_marker == "/opt/web/venv/.bytecode-compiled"
    assert WEB_VENV.pins_text == "web-app==2.0 web-plugins==1.1" and WEB_VENV.bytecode_tag == "2.0"
