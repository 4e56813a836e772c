"""A real moeserve process on loopback for end-to-end tests (ephemeral port via a port file).

    with LiveServer(moeserve_binary, model_dir, ["scheduler.max_running=8"]) as server:
        ...  # server.target == "127.0.0.1:PORT"

On exit the server gets SIGTERM and must drain and exit with status 0.
"""
import os
import signal
import subprocess
import tempfile
import time


class LiveServer:
    def __init__(self, binary, model, overrides=(), metrics_listen="", startup_timeout=60):
        self.binary = binary
        self.model = model
        self.overrides = list(overrides)
        self.metrics_listen = metrics_listen
        self.startup_timeout = startup_timeout
        self.port = None
        self.log = None

    @property
    def target(self):
        return f"127.0.0.1:{self.port}"

    def __enter__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="moeserve-live-")
        port_file = os.path.join(self.dir.name, "port")
        settings = [f"model.path={self.model}", "server.listen=127.0.0.1:0", f"server.port_file={port_file}",
                    f"metrics.listen={self.metrics_listen}", "server.grace_period_s=10",
                    "http.listen="] + self.overrides  # the OpenAI HTTP API's default port 8000 may be taken
        self.log = open(os.path.join(self.dir.name, "server.log"), "w+")
        self.proc = subprocess.Popen([self.binary, "--set", ",".join(settings)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + self.startup_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moeserve exited with {self.proc.returncode} during start:\n{self.output()}")
            if os.path.exists(port_file):
                self.port = int(open(port_file).read().strip())
                return self
            time.sleep(0.05)
        self.proc.kill()
        raise RuntimeError(f"moeserve did not start within {self.startup_timeout}s:\n{self.output()}")

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        """SIGTERM, wait for the drain; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __exit__(self, exc_type, exc, tb):
        code = self.stop()
        text = self.output()
        self.log.close()
        self.dir.cleanup()
        if exc_type is None and code != 0:
            raise RuntimeError(f"moeserve exited with status {code} after SIGTERM:\n{text}")
        return False
