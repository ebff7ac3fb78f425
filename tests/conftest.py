import os, shutil, socket, subprocess, sys, time
from pathlib import Path
import pytest

BIN = Path(sys.executable).parent


@pytest.fixture(scope='session')
def imgclf_home(tmp_path_factory):
    "A private IMGCLF_HOME for the whole test session, so nothing is written under ~"
    home = tmp_path_factory.mktemp('imgclf_home')
    old = os.environ.get('IMGCLF_HOME')
    os.environ['IMGCLF_HOME'] = str(home)
    yield home
    if old is None: os.environ.pop('IMGCLF_HOME', None)
    else: os.environ['IMGCLF_HOME'] = old


@pytest.fixture(scope='session')
def demo_run(imgclf_home, tmp_path_factory):
    "Run the real `imgclf demo` command once; return (completed process, output folder)"
    out = tmp_path_factory.mktemp('demo')
    proc = subprocess.run([str(BIN/'imgclf'), 'demo', '--out', str(out), '--quiet'], capture_output=True, text=True,
                          env={**os.environ, 'IMGCLF_HOME': str(imgclf_home)}, timeout=900)
    return proc, out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
