"""Test driver of the client tests: a real moeserve process on 127.0.0.1, port 0.

    with LiveMoeserve(moeserve, config, model) as server:
        ...  # server.target == "127.0.0.1:PORT"

The server runs with the given config file plus --set overrides: model.path (absolute),
server.listen=127.0.0.1:0, server.port_file in a temporary directory, and metrics.listen on an
ephemeral port too (so tests can run in parallel). Start-up waits for the port file (which the
server writes once it is SERVING) up to a timeout. On exit, whatever happened in the test, the
server gets SIGTERM and must drain and exit with status 0; its log is printed on any failure.

run_case(cases) is the main() of a test script:
    script.py --moeserve BIN --config YAML --model DIR --case NAME [script's own flags]
runs cases[NAME](server, args) against a fresh server.
"""
import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time


class LiveMoeserve:
    def __init__(self, binary, config, model, overrides=(), startup_timeout=120.0, shutdown_timeout=90.0):
        for value in [model, *overrides]:
            if "," in value:
                raise ValueError(f"a --set value cannot hold a comma: {value!r}")
        self.binary = binary
        self.config = config
        self.model = os.path.abspath(model)
        self.overrides = list(overrides)
        self.startup_timeout = startup_timeout
        self.shutdown_timeout = shutdown_timeout
        self.port = None
        self.proc = None

    @property
    def target(self):
        return f"127.0.0.1:{self.port}"

    def __enter__(self):
        self._dir = tempfile.TemporaryDirectory(prefix="moeserve-client-test-")
        port_file = os.path.join(self._dir.name, "port")
        settings = [f"model.path={self.model}", "server.listen=127.0.0.1:0", f"server.port_file={port_file}",
                    "metrics.listen=127.0.0.1:0", "http.listen="] + self.overrides
        self._log_path = os.path.join(self._dir.name, "moeserve.log")
        with open(self._log_path, "w") as log:
            self.proc = subprocess.Popen([self.binary, "--config", self.config, "--set", ",".join(settings)],
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + self.startup_timeout
            while not os.path.exists(port_file):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"moeserve exited with status {self.proc.returncode} while starting")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moeserve wrote no port file within {self.startup_timeout:.0f} s")
                time.sleep(0.05)
            with open(port_file) as f:
                self.port = int(f.read().strip())
        except BaseException:
            self._stop()
            self._dump_log()
            self._dir.cleanup()
            raise
        return self

    def log(self):
        with open(self._log_path, errors="replace") as f:
            return f.read()

    def _dump_log(self):
        sys.stderr.write(f"---- moeserve log ({' '.join([self.binary, '--config', self.config])}) ----\n"
                         f"{self.log()}---- end of moeserve log ----\n")

    def _stop(self):
        """SIGTERM, then wait for the drain; SIGKILL past the timeout. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.shutdown_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return f"killed: no exit within {self.shutdown_timeout:.0f} s of SIGTERM"
        return self.proc.returncode

    def __exit__(self, exc_type, exc, tb):
        status = self._stop()
        try:
            if status != 0 or exc_type is not None:
                self._dump_log()
            if status != 0 and exc_type is None:
                raise AssertionError(f"moeserve did not exit with status 0 after SIGTERM: {status}")
            if status != 0:
                sys.stderr.write(f"moeserve also failed to exit with status 0 after SIGTERM: {status}\n")
        finally:
            self._dir.cleanup()
        return False


def run_case(cases, add_arguments=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--moeserve", required=True, help="the moeserve binary")
    ap.add_argument("--config", required=True, help="the server's config file")
    ap.add_argument("--model", required=True, help="the model directory (model.path)")
    ap.add_argument("--case", required=True, choices=sorted(cases))
    ap.add_argument("--startup_timeout", type=float, default=120.0)
    if add_arguments:
        add_arguments(ap)
    args = ap.parse_args()
    start = time.monotonic()
    with LiveMoeserve(args.moeserve, args.config, args.model, startup_timeout=args.startup_timeout) as server:
        cases[args.case](server, args)
    print(f"{args.case}: PASS ({time.monotonic() - start:.1f} s)")
