"""Which of the project's files are uploaded, and why the others are not.

Left out, in this order of precedence (all patterns in gitignore syntax, matched against the path relative to
the project directory):
  - symlinks whose target is outside the project (or missing): skipped with a warning, never read;
    a symlink to a directory is not followed; a symlink to a file inside the project is uploaded under
    the link's path with its target's content, when neither the link's path nor the target's passes a
    rule below;
  - DEFAULT_EXCLUDES: tooling and caches, always;
  - the project's .prefectignore;
  - SECRET_EXCLUDES: what looks like a key, a password or a stack's state, unless an --include pattern
    matches it (the only way to upload such a file);
  - the deploy's own manifest name, and anything that is not a regular file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prefect_host.deploy.request import DeployError

# Always left out of the upload (a directory listed here is not even walked).
DEFAULT_EXCLUDES = (
    ".git/",
    ".hg/",
    ".svn/",
    ".venv/",
    "venv/",
    "__pycache__/",
    "*.py[cod]",
    ".prefectignore",
    ".mypy_cache/",
    ".pytest_cache/",
    ".ruff_cache/",
    ".ipynb_checkpoints/",
    ".DS_Store",
)

# Left out unless an --include pattern names them: keys, passwords, tokens and infrastructure state.
SECRET_EXCLUDES = (
    "outputs.json",  # the stack's outputs: the IAM key and the server's password
    ".demo/",  # the local demo's state, with the same
    "Pulumi.*.yaml",  # a Pulumi stack's config (its secrets, encrypted or not)
    ".pulumi/",
    "*.tfstate",
    "*.tfstate.*",
    "*.tfvars",
    ".terraform/",
    ".env",
    ".env.*",
    "*.env",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    "*.kdbx",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    ".ssh/",
    ".aws/",
    ".gnupg/",
    ".docker/",
    ".kube/",
    "kubeconfig",
    "*.kubeconfig",
    "credentials",
    "credentials.*",
    "*credentials*.json",
    "service-account*.json",
    "client_secret*.json",
    "secrets.*",
    ".secrets/",
    "profiles.toml",  # a Prefect profile: the API's auth string
    ".netrc",
    "_netrc",
    ".pypirc",
    ".npmrc",
    ".git-credentials",
    ".pgpass",
    ".htpasswd",
    ".boto",
    ".s3cfg",
)

# The object in the deployment's folder listing what the deploy uploaded there (see upload.py).
MANIFEST_NAME = ".prefect-host-manifest.json"


@dataclass(frozen=True)
class Selection:
    files: dict[str, Path]  # uploaded: relative POSIX path -> the file read (a link's target in the project)
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (relative path, why); a directory ends in /
    warnings: list[str] = field(default_factory=list)  # symlinks skipped because they leave the project

    @property
    def secret_count(self) -> int:
        return sum(1 for _, why in self.left_out if why.startswith("secret-looking"))


class _Rules:
    """The patterns; remembers which --include patterns brought a file back."""

    def __init__(self, project_dir: Path, includes: Sequence[str]):
        import pathspec

        ignore_file = project_dir / ".prefectignore"
        ignored = ignore_file.read_text().splitlines() if ignore_file.is_file() else []
        self.builtin = pathspec.GitIgnoreSpec.from_lines(DEFAULT_EXCLUDES)
        self.ignored = pathspec.GitIgnoreSpec.from_lines(ignored)
        self.secret = pathspec.GitIgnoreSpec.from_lines(SECRET_EXCLUDES)
        self.includes = {pattern: pathspec.GitIgnoreSpec.from_lines([pattern]) for pattern in includes}
        self.used: set[str] = set()

    def why_left_out(self, relative: str) -> str | None:
        """Why the file at this path is not uploaded, or None."""
        if relative == MANIFEST_NAME:
            return "reserved: the name of the deploy's manifest"
        if matched := _matched(self.builtin, relative):
            return f"built-in exclude {matched!r}"
        if matched := _matched(self.ignored, relative):
            return f".prefectignore {matched!r}"
        if matched := _matched(self.secret, relative):
            included = [pattern for pattern, spec in self.includes.items() if spec.match_file(relative)]
            if not included:
                return f"secret-looking ({matched!r}); --include {relative!r} uploads it"
            self.used.update(included)
        return None


def _matched(spec, relative: str) -> str | None:
    result = spec.check_file(relative)
    return spec.patterns[result.index].pattern if result.include else None


def select_files(project_dir: Path, includes: Sequence[str] = ()) -> Selection:
    """The files to upload (sorted by path) and what is left out, with the reason."""
    root = project_dir.resolve()
    rules = _Rules(root, includes)
    selection = Selection(files={})
    for directory, dirnames, filenames in os.walk(root):  # symlinked directories are listed, never entered
        base = Path(directory)
        prefix = "" if base == root else base.relative_to(root).as_posix()
        for name in sorted(dirnames):
            relative = f"{prefix}/{name}" if prefix else name
            why = _symlink_problem(base / name, root, relative, selection) or (
                f"built-in exclude {matched!r}" if (matched := _matched(rules.builtin, relative + "/")) else None
            )
            if why:
                dirnames.remove(name)
                selection.left_out.append((relative + "/", why))
        for name in sorted(filenames):
            relative = f"{prefix}/{name}" if prefix else name
            _select_file(base / name, root, relative, rules, selection)
    unused = [pattern for pattern in includes if pattern not in rules.used]
    if unused:
        raise DeployError(
            f"--include {unused[0]!r}: brings back no file. It only overrides the secret-looking excludes "
            "(the built-in excludes, .prefectignore and symlinks leaving the project still apply); "
            "--dry-run lists what is left out and why."
        )
    return Selection(dict(sorted(selection.files.items())), sorted(selection.left_out), selection.warnings)


def _select_file(path: Path, root: Path, relative: str, rules: _Rules, selection: Selection) -> None:
    why = _symlink_problem(path, root, relative, selection) or rules.why_left_out(relative)
    target = path if why else path.resolve()
    if not why and target != path:
        target_relative = target.relative_to(root).as_posix()
        if target_why := rules.why_left_out(target_relative):
            why = f"symlink to {target_relative}, which is left out: {target_why}"
    if not why and not target.is_file():
        why = "not a regular file"
    if why:
        selection.left_out.append((relative, why))
    else:
        selection.files[relative] = target


def _symlink_problem(path: Path, root: Path, relative: str, selection: Selection) -> str | None:
    """Why a symlink is not followed (a warning too when it leaves the project); None for anything else."""
    if not path.is_symlink():
        return None
    target = path.resolve()
    if not target.is_relative_to(root):
        why = f"symlink leaving the project (-> {os.readlink(path)})"
        selection.warnings.append(f"{relative}: {why}; not uploaded")
        return why
    if not target.exists():
        why = f"broken symlink (-> {os.readlink(path)})"
        selection.warnings.append(f"{relative}: {why}; not uploaded")
        return why
    if target.is_dir():
        return f"symlink to the directory {target.relative_to(root).as_posix() or '.'}/: not followed"
    return None
