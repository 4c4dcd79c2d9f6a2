"""The laptop's Prefect work (storage blocks, profile) in a child process, started before the
host steps, so that importing Prefect overlaps with the work on the host."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from prefect_host.errors import ProfileError
from prefect_host.profile import ANSWER_PREFIX

CHILD_TIMEOUT = 300.0
_PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # so the child imports this same package


class ProfileProcess:
    """The laptop's Prefect work (storage blocks, profile) in a child process, started before the
    host steps.

    Importing Prefect costs ~1.5 s of CPU. In a thread it would compete with SSH and HTTP for the
    GIL; in a process of its own it runs on another core meanwhile, which keeps a re-run on a
    converged host under 3 s. Requests (with the auth string and keys) go over stdin, one JSON line
    each; each gets one answer line (prefect_host.profile.serve).
    """

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_PARENT), env.get("PYTHONPATH")) if p)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "prefect_host.profile"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        # Pipes are read by threads (select() does not work on pipes on Windows); stderr is drained
        # so that the child never blocks on it, and its last line explains a crash.
        self._answers: queue.Queue[str | None] = queue.Queue()
        self._stderr_tail: list[str] = []
        threading.Thread(target=self._read_answers, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_answers(self) -> None:
        for line in self._process.stdout:
            if line.startswith(ANSWER_PREFIX):
                self._answers.put(line[len(ANSWER_PREFIX) :])
        self._answers.put(None)  # end of output: the child exited

    def _read_stderr(self) -> None:
        for line in self._process.stderr:
            if line.strip():
                self._stderr_tail = [*self._stderr_tail[-4:], line.rstrip()]

    def call(self, op: str, **arguments: Any) -> Any:
        """Run one operation in the child; its PrefectHostError comes back as a ProfileError."""
        try:
            self._process.stdin.write(json.dumps({"op": op, **arguments}) + "\n")
            self._process.stdin.flush()
        except OSError:
            pass  # the child has exited; reading its answer says why
        try:
            answer = self._answers.get(timeout=CHILD_TIMEOUT)
        except queue.Empty:
            self.cancel()
            raise ProfileError(f"The laptop's Prefect step ({op}) did not answer within {CHILD_TIMEOUT:g} s.") from None
        if answer is None:
            self._process.wait()
            last = self._stderr_tail[-1] if self._stderr_tail else "no output"
            raise ProfileError(f"The laptop's Prefect step ({op}) failed in its child process: {last}")
        decoded = json.loads(answer)
        if "error" in decoded:
            raise ProfileError(decoded["error"])
        return decoded["result"]

    def close(self) -> None:
        """End the child: it exits at the end of its stdin, or is killed when it is still busy."""
        if self._process.poll() is None:
            try:
                self._process.stdin.close()
                self._process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.cancel()
        self._process.wait()

    def cancel(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
