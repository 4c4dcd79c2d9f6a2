"""prefect_host.profile.ca: the server's CA stored beside the profiles file, and trusted in this process."""

from __future__ import annotations

import stat
from pathlib import Path


def test_the_ca_is_stored_beside_the_profiles_world_readable_and_only_when_it_changed(profiles_path, tmp_path):
    from prefect.settings import PREFECT_API_SSL_CERT_FILE

    from prefect_host.local.pebble import make_tls_ca_and_certificate
    from prefect_host.profile import store_ca, trusting

    ca_path, _, _ = make_tls_ca_and_certificate(tmp_path, "10.77.0.1")
    pem = ca_path.read_text()
    stored = store_ca("prefect-host-dev", pem)
    path = Path(stored["path"])
    assert stored["changed"] and path == profiles_path.parent / "prefect-host-dev-ca.pem"
    assert path.read_text() == pem and stat.S_IMODE(path.stat().st_mode) == 0o644
    mtime = path.stat().st_mtime_ns
    assert store_ca("prefect-host-dev", pem) == {"path": str(path), "changed": False}
    assert path.stat().st_mtime_ns == mtime
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no staging file left
    with trusting(str(path)):
        assert PREFECT_API_SSL_CERT_FILE.value() == str(path)
    assert PREFECT_API_SSL_CERT_FILE.value() != str(path)
