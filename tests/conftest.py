import os, re, signal, socket, subprocess, sys, threading, time
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
    "A port nothing listens on now (for a URL that must fail); a server should rather bind port 0 itself: `start_and_read_port`"
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def start_and_read_port(cmd:list, # a server's command line with `--port 0` (`imgclf serve`, `imgclf app`)
                        env:dict|None=None, log:Path|None=None, timeout:float=600, **popen) -> tuple[subprocess.Popen, int]:
    "Start `cmd` in its own session; return it and the port from the first line it prints with its address (http://HOST:PORT)"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, env=env, **popen)
    proc.lines, proc.changed = [], threading.Condition()
    out = open(log, 'w') if log else None
    def read():  # all along, so that the server never blocks on a full pipe
        for line in proc.stdout:
            with proc.changed: proc.lines.append(line); proc.changed.notify_all()
            if out: out.write(line); out.flush()
            if m := re.search(r'http://[^\s/]+:(\d+)', line): proc.port = proc.port or int(m.group(1)); got.set()
        with proc.changed: proc.ended = True; proc.changed.notify_all()
        got.set()
    proc.port, proc.ended, got = None, False, threading.Event()
    threading.Thread(target=read, daemon=True).start()
    got.wait(timeout)  # the address line, or the end of the output
    if proc.port is None:
        stop(proc)
        pytest.fail(f'{" ".join(map(str, cmd[:3]))} ended (status {proc.returncode}) without printing its address:\n' + ''.join(proc.lines)[-3000:])
    return proc, proc.port


def wait_for_line(proc:subprocess.Popen, # from `start_and_read_port`
                  pattern:str, # a regular expression
                  timeout:float=600) -> str:
    "The first line `proc` printed that matches `pattern`, waiting for it; fail with its output if it ends without one"
    found = lambda: next((l for l in proc.lines if re.search(pattern, l)), None)
    with proc.changed:
        proc.changed.wait_for(lambda: found() or proc.ended, timeout)
        if line := found(): return line
    pytest.fail(f'no line matching {pattern!r}:\n' + ''.join(proc.lines)[-3000:])


def stop(proc:subprocess.Popen):
    "Stop a process started in its own session (`start_and_read_port`), and everything it started"
    if proc.poll() is None: os.killpg(proc.pid, signal.SIGTERM)
    try: proc.wait(timeout=20)
    except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait()


@contextmanager
def serving(cmd:list, # the server's command line; it must serve GET /health on `port`
            port:int|None, # None: `cmd` has `--port 0` and prints the port it got (`start_and_read_port`)
            log:Path, env:dict, timeout:float=120):
    "Start `cmd` (an `imgclf serve`) in its own session, wait until /health answers 200, yield its URL; stop it afterwards"
    import httpx
    if port is None: proc, port = start_and_read_port(cmd, env, log)
    else:
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
    finally: stop(proc)
