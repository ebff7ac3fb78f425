"""The app on a stand-in for Binder: an environment built from binder/ as repo2docker builds it (`.ci/binder` makes it
and names it in `$IMGCLF_BINDER_VENV`, with the HOME that binder/postBuild ran in as `$IMGCLF_BINDER_HOME`), its
Jupyter server started as Binder starts it (binder/start, from the repository root) on one CPU, and Voila as a server
extension, driven by Chromium through Playwright."""
import json, os, re, secrets, subprocess, threading, time, urllib.request
from pathlib import Path
import numpy as np
import pytest
from PIL import Image
from conftest import start_and_read_port, stop
from test_app import ROOT
from test_app_browser import browser, upload, classify, shown_probs, expected  # noqa: F401 (browser is a fixture)

VENV = os.environ.get('IMGCLF_BINDER_VENV')
pytestmark = pytest.mark.skipif(not VENV, reason='no Binder stand-in: .ci/binder builds one and names it in $IMGCLF_BINDER_VENV')
APP = 'voila/render/nbs/07_app.ipynb'


def binder_env() -> dict:
    "The environment Binder's server runs in: the built environment first on the PATH, postBuild's HOME, nothing of ours"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(('JUPYTER_', 'IMGCLF_', 'PYTHON', 'VIRTUAL_ENV', 'MPLCONFIGDIR', 'IPYTHONDIR'))}
    return {**env, 'PATH': f'{VENV}/bin:{env["PATH"]}', 'VIRTUAL_ENV': VENV, 'HOME': os.environ['IMGCLF_BINDER_HOME']}


def tree_rss(pid:int) -> int:
    "Bytes of memory held by a process and all its descendants (the server and its kernels)"
    import psutil
    total = 0
    try: procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.Error: return 0
    for p in procs:
        try: total += p.memory_info().rss
        except psutil.Error: pass
    return total


class Peak(threading.Thread):
    "The most memory a process tree held while sampled, every 0.1 s from `start()` to `stop()`"
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()
    def run(self):
        while not self.done.is_set():
            self.peak = max(self.peak, tree_rss(self.pid)); self.done.wait(0.1)
    def stop(self):
        self.done.set(); self.join(); return self.peak


@pytest.fixture(scope='module')
def model(imgclf_home):
    "The model binder/postBuild trained (its path is in postBuild's HOME), loaded in this test's environment"
    from imgclf.model import load_model
    path = Path((Path(os.environ['IMGCLF_BINDER_HOME'])/'.imgclf-demo-model').read_text().strip())
    return path, load_model(path)


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    "binder/start jupyter server on one CPU (as Binder gives) and a port it picks; yields (url, process, token, log tail)"
    token = secrets.token_hex(16)
    logf = tmp_path_factory.mktemp('binder')/'server.log'
    cmd = ['taskset', '-c', '0', 'binder/start', 'jupyter', 'server', '--no-browser', '--port=0', '--ServerApp.ip=127.0.0.1',
           '--ServerApp.port_retries=0', f'--IdentityProvider.token={token}']
    if os.geteuid() == 0: cmd.append('--allow-root')  # Binder's user is not root; this machine's may be
    proc, port = start_and_read_port(cmd, binder_env(), logf, timeout=120, cwd=ROOT)  # the first line with its URL
    text = lambda: logf.read_text(errors='replace')
    url = f'http://127.0.0.1:{port}/'
    try:
        deadline = time.time() + 120
        while 'is running at' not in text():
            if proc.poll() is not None: pytest.fail(f'the server exited with {proc.returncode}:\n{text()[-3000:]}')
            if time.time() > deadline: pytest.fail(f'the server did not start within 120 s:\n{text()[-3000:]}')
            time.sleep(0.3)
        yield url, proc, token, lambda: text()[-5000:], text
    finally:
        stop(proc)


def running_kernels(server) -> set:
    url, proc, token, *_ = server
    req = urllib.request.Request(f'{url}api/kernels', headers={'Authorization': f'token {token}'})
    with urllib.request.urlopen(req, timeout=30) as r: return {k['id'] for k in json.load(r)}


def open_app(browser, server, width=1200, height=900):
    "A visitor who follows the Binder badge: the app's URL with the token, as Binder redirects to it"
    url, proc, token, *_ = server
    page = browser.new_context(viewport=dict(width=width, height=height)).new_page()  # a tab of a browser that stays open
    page.goto(f'{url}{APP}?token={token}', timeout=300_000)
    page.locator('.imgclf-upload').wait_for(timeout=300_000)
    page.locator('.imgclf-row').first.wait_for(timeout=60_000)
    return page


def leave(page):
    "Close the tab as a visitor does (its page gets to say goodbye); the browser stays open"
    page.close(run_before_unload=True)


def kernel_id(page) -> str: return page.evaluate("JSON.parse(document.getElementById('jupyter-config-data').textContent).kernelId")


def wait_kernels(server, want:set, timeout:float=120) -> float:
    "Poll until exactly the kernels `want` run; the seconds that took"
    t = time.time()
    while (now := running_kernels(server)) != want:
        assert time.time() < t + timeout, f'kernels {now}, expected {want}:\n{server[3]()}'
        time.sleep(0.2)
    return time.time() - t


def test_show_config_holds_the_binder_settings():
    "binder/postBuild put the settings where Jupyter Server applies them"
    proc = subprocess.run(['binder/start', 'jupyter', 'server', '--show-config'], cwd=ROOT, env=binder_env(), capture_output=True,
                          text=True, timeout=120)
    out = proc.stdout
    print('\n' + '\n'.join(l for l in out.splitlines() if re.search(r'config\.json|cull|websocket', l)))
    from imgclf.app import WEBSOCKET_LIMIT
    assert f"'websocket_max_message_size': {WEBSOCKET_LIMIT}" in out, out
    assert re.search(r'\.cull_idle_timeout = 180\b', out) and re.search(r'\.cull_connected = False\b', out), out
    assert f'{VENV}/etc/jupyter/jupyter_server_config.json' in out, out


def test_first_visitor_on_one_cpu(server, browser, model, tmp_path):
    """One visitor on a server pinned to one CPU: the time from opening the page to the first answer, and the most
    memory the server and its kernels held (Binder gives 2 GB). This stand-in's torch is the CUDA build, whose kernel
    is larger than one with Binder's +cpu build, so Binder's figure is lower."""
    url, proc, token, logtail, log = server
    rose = tmp_path/'rose.jpg'
    from imgclf.core import image_files
    from imgclf.photos import flower_photos
    Image.open(image_files(flower_photos()/'rose')[5]).save(rose, quality=92)
    peak = Peak(proc.pid); peak.start()
    t = time.time()
    try:
        page = open_app(browser, server)
        opened = time.time() - t
        classify(page, rose)
        first = time.time() - t
        p = expected(model[1], rose)
        for c in model[1].classes: assert shown_probs(page)[c] == pytest.approx(100 * p.probs[c], abs=0.051)
        time.sleep(2)  # a little of the idle page, as a visitor reads the answer
    finally: most = peak.stop()
    print(f'\nBinder stand-in, one CPU: page ready {opened:.1f} s, first answer {first:.1f} s after opening it; '
          f'peak memory of the server and its kernels {most/2**20:.0f} MiB')
    assert most < 2e9, f'{most/2**20:.0f} MiB: over what Binder gives'
    leave(page)
    wait_kernels(server, set())


def test_phone_photo_of_20_mb(server, browser, model, tmp_path):
    "A 20 MB photo passes the websocket (64 MiB on Binder) and is classified as it would be locally"
    from imgclf.core import image_files
    from imgclf.photos import flower_photos
    path = tmp_path/'phone.jpg'
    im = Image.open(image_files(flower_photos()/'sunflower')[3]).convert('RGB').resize((6000, 4000), Image.BICUBIC)
    noise = np.random.default_rng(0).normal(0, 24, (4000, 6000, 3)).astype(np.int16)  # sensor noise: a big file
    Image.fromarray((np.asarray(im, dtype=np.int16) + noise).clip(0, 255).astype(np.uint8)).save(path, 'JPEG', quality=98)
    assert path.stat().st_size > 20_000_000, path.stat().st_size
    page = open_app(browser, server)
    t = time.time()
    classify(page, path)
    print(f'\nBinder stand-in: a {path.stat().st_size/1e6:.0f} MB photo answered in {time.time() - t:.1f} s: '
          + page.locator('.imgclf-answer').inner_text().replace('\n', ' '))
    p = expected(model[1], path)
    for c in model[1].classes: assert shown_probs(page)[c] == pytest.approx(100 * p.probs[c], abs=0.051)
    assert 'Connection lost' not in page.inner_text('body')
    leave(page)
    wait_kernels(server, set())


def test_reloaded_and_closed_pages_stop_their_kernels(server, browser, model):
    """Reloading the page five times leaves one kernel, the open page's; closing it leaves none. Each old kernel is
    stopped by the page's shutdown request as it goes, not culled minutes later"""
    url, proc, token, logtail, log = server
    page = open_app(browser, server)
    kids, waits = [kernel_id(page)], []
    wait_kernels(server, {kids[-1]})
    for _ in range(5):
        t = time.time()
        page.reload(wait_until='commit')
        while kids[-1] in running_kernels(server):  # the old page's kernel
            assert time.time() < t + 120, f'kernel {kids[-1]} still runs 120 s after its page was reloaded:\n{logtail()}'
            time.sleep(0.1)
        waits.append(time.time() - t)
        page.locator('.imgclf-upload').wait_for(timeout=300_000)
        kids.append(kernel_id(page))
        wait_kernels(server, {kids[-1]})  # one kernel: the open page's
    t = time.time()
    leave(page)
    wait_kernels(server, set())
    waits.append(time.time() - t)
    print("\nBinder stand-in: seconds from each of 5 reloads and a close until the page's old kernel was gone: "
          + ', '.join(f'{w:.1f}' for w in waits))
    assert len(set(kids)) == 6
    assert not [l for l in log().splitlines() if 'Culling' in l and any(k in l for k in kids)], logtail()
    assert '_xsrf' not in log(), logtail()  # no shutdown request refused
