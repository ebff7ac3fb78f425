import os, shutil, signal, socket, subprocess, sys, time
from contextlib import contextmanager
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


@contextmanager
def serving(cmd:list, # the server's command line; it must serve GET /health on `port`
            port:int, log:Path, env:dict, timeout:float=120):
    "Start `cmd` (an `imgclf serve`) in its own session, wait until /health answers 200, yield its URL; stop it afterwards"
    import httpx
    with open(log, 'wb') as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url, deadline = f'http://127.0.0.1:{port}', time.time() + timeout
    try:
        while True:
            try:
                if httpx.get(url + '/health', timeout=2).status_code == 200: break
            except httpx.TransportError: pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f'{" ".join(map(str, cmd[:3]))} did not start:\n{log.read_text(errors="replace")[-3000:]}')
            time.sleep(0.3)
        yield url
    finally:
        if proc.poll() is None: os.killpg(proc.pid, signal.SIGTERM)
        try: proc.wait(timeout=20)
        except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait()
