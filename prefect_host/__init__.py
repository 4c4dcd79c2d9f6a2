"""prefect-host: everything that happens after `pulumi up` (outputs contract, SSH session, facts,
steps, laptop profile, storage). This package never imports pulumi; the Pulumi program in infra/
never opens SSH."""
