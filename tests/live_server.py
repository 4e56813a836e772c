"""A real moeserve process on loopback for end-to-end tests and benchmarks: ephemeral gRPC port
(written to a port file once the server is SERVING), metrics on an ephemeral port unless told
otherwise; the one helper every Python test, client test and benchmark uses.

    with LiveServer(moeserve_binary, model_dir, ["scheduler.max_running=8"]) as server:
        ...  # server.target == "127.0.0.1:PORT"

An optional config file goes first, then the --set overrides (model.path absolute, the listen
addresses, the port file, the caller's `overrides`). On exit, whatever happened in the test, the
server gets SIGTERM and must drain and exit with status 0; its log is printed on any failure.

run_case(cases) is the main() of a client test script:
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


class LiveServer:
    def __init__(self, binary, model, overrides=(), metrics_listen="127.0.0.1:0", config=None,
                 startup_timeout=120.0, shutdown_timeout=90.0, http_listen=""):
        for value in [model, *overrides]:
            if "," in value:
                raise ValueError(f"a --set value cannot hold a comma: {value!r}")
        self.binary = binary
        self.config = config
        self.model = os.path.abspath(model)
        self.overrides = list(overrides)
        self.metrics_listen = metrics_listen
        self.http_listen = http_listen  # the OpenAI-compatible API; off unless asked (its default is :8000)
        self.startup_timeout = startup_timeout
        self.shutdown_timeout = shutdown_timeout
        self.port = None
        self.proc = None

    @property
    def target(self):
        return f"127.0.0.1:{self.port}"

    def __enter__(self):
        self._dir = tempfile.TemporaryDirectory(prefix="moeserve-live-")
        port_file = os.path.join(self._dir.name, "port")
        settings = [f"model.path={self.model}", "server.listen=127.0.0.1:0", f"server.port_file={port_file}",
                    f"metrics.listen={self.metrics_listen}", f"http.listen={self.http_listen}",
                    "server.grace_period_s=10"] + self.overrides
        command = [self.binary] + (["--config", self.config] if self.config else []) + ["--set", ",".join(settings)]
        self._log_path = os.path.join(self._dir.name, "moeserve.log")
        with open(self._log_path, "w") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
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

    def output(self):
        """The server's log so far."""
        with open(self._log_path, errors="replace") as f:
            return f.read()

    log = output

    def _dump_log(self):
        sys.stderr.write(f"---- moeserve log ----\n{self.output()}---- end of moeserve log ----\n")

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

    def stop(self):
        return self._stop()

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
    with LiveServer(args.moeserve, args.model, config=args.config, startup_timeout=args.startup_timeout) as server:
        cases[args.case](server, args)
    print(f"{args.case}: PASS ({time.monotonic() - start:.1f} s)")
