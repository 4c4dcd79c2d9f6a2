"""mockstack.run_program on small programs of its own: the runner's contract, independent of infra/."""

import sys
import textwrap

import pytest

import mockstack

PROGRAM = """
import pulumi
import pulumi_aws as aws
import pulumi_tls as tls

config = pulumi.Config("demo")


class Box(pulumi.ComponentResource):
    def __init__(self, name):
        super().__init__("demo:box:Box", name, None, None)
        self.key = tls.PrivateKey(f"{name}-key", algorithm="ED25519", opts=pulumi.ResourceOptions(parent=self))
        self.bucket = aws.s3.Bucket(f"{name}-bucket", force_destroy=True,
                                    opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True))
        self.register_outputs({"bucketArn": self.bucket.arn})


box = Box("box")
pulumi.export("bucketArn", box.bucket.arn)
pulumi.export("publicKey", box.key.public_key_openssh)
pulumi.export("privateKey", box.key.private_key_openssh)
pulumi.export("token", pulumi.Output.secret("s3cr3t-token"))
pulumi.export("settings", {"list": config.get_object("list"), "n": config.get_int("n"),
                           "flag": config.get_bool("flag"), "text": config.get("text")})
if config.get_bool("fail"):
    raise ValueError("the program failed on purpose")
"""


@pytest.fixture(scope="module")
def program_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("demo")
    (directory / "__main__.py").write_text(textwrap.dedent(PROGRAM))
    return directory


def run(program_dir, **config):
    return mockstack.run_program(
        {f"demo:{k}": v for k, v in config.items()}, stack="test", project="demo", program_dir=program_dir
    )


def test_resources_are_recorded_as_the_engine_sees_them(program_dir):
    result = run(program_dir)
    box = result.one("demo:box:Box")
    assert (box.name, box.custom, box.parent, box.id) == ("box", False, None, "")
    assert box.urn == "urn:pulumi:test::demo::demo:box:Box::box"
    bucket = result.one("aws:s3/bucket:Bucket")
    assert bucket.urn == "urn:pulumi:test::demo::demo:box:Box$aws:s3/bucket:Bucket::box-bucket"
    assert bucket.parent == box.urn and bucket.custom and bucket.retain_on_delete
    assert bucket.inputs["forceDestroy"] is True  # wire (camelCase) names, plain values
    assert bucket.id == bucket.outputs["bucket"] and bucket.outputs["bucket"].startswith("box-bucket-")
    assert bucket.outputs["arn"] == f"arn:aws:s3:::{bucket.id}"
    assert box.outputs == {"bucketArn": bucket.outputs["arn"]}
    assert [r.name for r in result.children_of(box)] in (["box-key", "box-bucket"], ["box-bucket", "box-key"])


def test_secrets_stay_secrets(program_dir):
    result = run(program_dir)
    key = result.one("tls:index/privateKey:PrivateKey")
    # The provider's additionalSecretOutputs are honoured, as the engine does.
    assert {"privateKeyOpenssh", "privateKeyPem"} <= key.secret_outputs
    assert "publicKeyOpenssh" not in key.secret_outputs
    assert result.secret_outputs == {"privateKey", "token"}
    assert result.outputs["token"] == "s3cr3t-token"
    assert result.outputs["privateKey"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")


def test_config_values_arrive_as_the_language_host_passes_them(program_dir):
    result = run(program_dir, list=["a", "b"], n=7, flag=True, text="plain")
    assert result.outputs["settings"] == {"list": ["a", "b"], "n": 7, "flag": True, "text": "plain"}
    assert mockstack.config_text(["a"]) == '["a"]' and mockstack.config_text(False) == "false"


def test_runs_are_repeatable_and_independent(program_dir):
    main_module = sys.modules["__main__"]
    first = run(program_dir, text="one")
    failed = mockstack.record_program({"demo:fail": True}, stack="test", project="demo", program_dir=program_dir)
    again = run(program_dir, text="one")
    other_stack = mockstack.run_program({}, stack="other", project="demo", program_dir=program_dir)
    assert sys.modules["__main__"] is main_module
    assert isinstance(failed.error, ValueError)

    def by_urn(result):
        return {r.urn: (r.inputs, r.outputs) for r in result.resources}

    assert by_urn(first) == by_urn(again)
    assert first.outputs == again.outputs and again.outputs["settings"]["text"] == "one"
    assert all(r.urn.startswith("urn:pulumi:other::demo::") for r in other_stack.resources)
    assert other_stack.outputs["bucketArn"] != first.outputs["bucketArn"]


def test_a_program_exception_surfaces_with_what_was_registered_before_it(program_dir):
    with pytest.raises(ValueError, match="failed on purpose"):
        run(program_dir, fail=True)
    failed = mockstack.record_program({"demo:fail": True}, stack="test", project="demo", program_dir=program_dir)
    assert {r.type for r in failed.resources} == {
        "demo:box:Box",
        "tls:index/privateKey:PrivateKey",
        "aws:s3/bucket:Bucket",
    }


def test_an_invoke_the_mocks_cannot_answer_is_an_error(tmp_path):
    (tmp_path / "__main__.py").write_text("import pulumi_aws as aws\naws.get_caller_identity()\n")
    run_result = mockstack.record_program({}, program_dir=tmp_path)
    assert "no answer for the invoke aws:index/getCallerIdentity:getCallerIdentity" in str(run_result.error)
