"""`daaas dms`: bad input exits 2 naming the argument; serve-source, serve-dmts and copy work end to end
as separate processes (started by PID, stopped and waited for)."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _cli(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "cli", "dms", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout, env=env)


@pytest.mark.parametrize("args, needle", [
    (["copy", "ftp://a/b", "https://c/d"], "SRC"),
    (["copy", "https://a/b", "https://c/d", "--streams", "0"], "--streams"),
    (["serve-source", "/no/such/dir"], "ROOT"),
    (["serve-dmts", ".", "--port", "99999"], "--port"),
])
def test_bad_arguments_exit_2(args, needle):
    r = _cli(*args)
    assert r.returncode == 2, r
    assert needle in r.stderr


def test_missing_pki_names_it(tmp_path):
    r = _cli("serve-source", tmp_path, "--pki", tmp_path / "nopki")
    assert r.returncode == 2 and "--pki" in r.stderr and "daaas pki init" in r.stderr
    r = _cli("copy", "https://127.0.0.1:1/a", "https://127.0.0.1:2/a", "--pki", tmp_path / "nopki")
    assert r.returncode == 2 and "--pki" in r.stderr


def test_missing_role_cert_names_it(pki_dir, tmp_path):
    r = _cli("serve-dmts", tmp_path, "--pki", pki_dir, "--cert-name", "nobody")
    assert r.returncode == 2 and "nobody" in r.stderr and "daaas pki issue" in r.stderr


def test_bad_api_config_exits_2(tmp_path, pki_dir, service_cert):
    f = tmp_path / "api.yaml"
    f.write_text("colour: blue\n")
    r = _cli("serve-api", "--config", f, "--pki", pki_dir, "--cert-name", "daaas-service")
    assert r.returncode == 2 and "colour" in r.stderr


class Server:
    def __init__(self, *args):
        self.p = subprocess.Popen([sys.executable, "-m", "cli", "dms", *map(str, args)], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, cwd=REPO)
        line = self.p.stdout.readline()
        assert "listening on" in line, line + self.p.stdout.read(2000)
        self.port = int(line.rsplit(":", 1)[1])
        threading.Thread(target=self.p.stdout.read, daemon=True).start()

    def stop(self):
        self.p.send_signal(signal.SIGINT)
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def test_serve_and_copy_end_to_end(tmp_path, pki_dir, service_cert, user_cert, other_user_cert, crl_file,
                                  make_file):
    src, dst = tmp_path / "src", tmp_path / "dst"
    dst.mkdir()
    data = make_file(src / "x" / "f.bin", 3_000_000, seed=5)
    source = Server("serve-source", src, "--pki", pki_dir, "--cert-name", "daaas-service")
    try:
        dmts = Server("serve-dmts", dst, "--pki", pki_dir, "--cert-name", "daaas-service", "--allow", "alice")
        try:
            r = _cli("copy", f"https://127.0.0.1:{source.port}/x/f.bin", f"https://127.0.0.1:{dmts.port}/x/f.bin",
                     "--streams", "3", "--pki", pki_dir, "--cert-name", "alice")
            assert r.returncode == 0, r.stderr
            assert "success: Created" in r.stdout
            assert "B/s" in r.stderr  # the progress bar
            assert (dst / "x" / "f.bin").read_bytes() == data
            r = _cli("copy", f"https://127.0.0.1:{source.port}/x/missing.bin",
                     f"https://127.0.0.1:{dmts.port}/x/missing.bin", "--pki", pki_dir, "--cert-name", "alice",
                     "--quiet")
            assert r.returncode == 1 and "copy failed" in r.stderr
            assert not (dst / "x" / "missing.bin").exists()
            # A subject the DMTS does not allow.
            r = _cli("copy", f"https://127.0.0.1:{source.port}/x/f.bin", f"https://127.0.0.1:{dmts.port}/x/g.bin",
                     "--pki", pki_dir, "--cert-name", "mallory", "--quiet")
            assert r.returncode == 1 and "403" in r.stderr
        finally:
            dmts.stop()
    finally:
        source.stop()
