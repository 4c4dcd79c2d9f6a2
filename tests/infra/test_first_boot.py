"""The first-boot texts that install the pinned host key, rendered directly."""

import pytest
import yaml

from first_boot import cloud_config, startup_script

PRIVATE = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA\nAAAAC3NzaC1lZDI1NTE5\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
PUBLIC = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGdummy\n"


def test_cloud_config_is_yaml_that_cloud_init_reads_as_ssh_keys():
    text = cloud_config(PRIVATE, PUBLIC)
    assert text.splitlines()[0] == "#cloud-config"
    assert yaml.safe_load(text) == {
        "ssh_deletekeys": True,
        "ssh_keys": {"ed25519_private": PRIVATE, "ed25519_public": PUBLIC.strip()},
    }


def test_startup_script_embeds_the_key_verbatim_in_a_quoted_heredoc():
    script = startup_script(PRIVATE, PUBLIC)
    body = script.split("<<'PREFECT_HOST_KEY'\n", 1)[1].split("\nPREFECT_HOST_KEY\n", 1)[0]
    assert body == PRIVATE.strip()
    assert f"printf '%s\\n' '{PUBLIC.strip()}'" in script


@pytest.mark.parametrize(
    "private, public",
    [
        (PRIVATE + "PREFECT_HOST_KEY\nrm -rf /\n", PUBLIC),
        (PRIVATE, "ssh-ed25519 AAAA' ; reboot ; '"),
    ],
)
def test_startup_script_refuses_text_that_would_escape_its_quoting(private, public):
    with pytest.raises(ValueError):
        startup_script(private, public)
