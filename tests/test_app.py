"The app's parts that need no browser: packaging, Binder's settings, the model's path, repeatable answers."
import json, os, re, shutil, signal, subprocess, sys, zipfile
from pathlib import Path
import pytest
from conftest import BIN

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
                 '--disable-sync', '--no-first-run',
                 '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream']  # a camera that shows a test pattern, allowed without asking


def chromium_path():
    "Chromium from $CHROMIUM, else the Debian package's /usr/bin/chromium, else the PATH"
    for c in [os.environ.get('CHROMIUM'), '/usr/bin/chromium', shutil.which('chromium'), shutil.which('chromium-browser')]:
        if c and Path(c).is_file(): return c
    return None


def _page_files(paths) -> list[dict]:
    import base64, mimetypes
    return [dict(name=Path(p).name, type=mimetypes.guess_type(str(p))[0] or 'application/octet-stream',
                 data=base64.b64encode(Path(p).read_bytes()).decode()) for p in paths]

_DATA_TRANSFER = """files => { const dt = new DataTransfer();
    for (const f of files) dt.items.add(new File([Uint8Array.from(atob(f.data), c => c.charCodeAt(0))], f.name, {type: f.type}));
    return dt; }"""


def drop_files(page, paths, selector:str='body'):
    "What a visitor does who drags `paths` from their desktop and drops them on the element `selector`"
    page.evaluate(f"""([files, selector]) => {{ const dt = ({_DATA_TRANSFER})(files), el = document.querySelector(selector);
        for (const type of ['dragenter', 'dragover', 'drop'])
            el.dispatchEvent(new DragEvent(type, {{dataTransfer: dt, bubbles: true, cancelable: true}})); }}""",
                  [_page_files(paths), selector])


def paste_files(page, paths):
    "What a visitor does who copies the pictures `paths` and presses Ctrl-V on the page"
    page.evaluate(f"""files => {{ const dt = ({_DATA_TRANSFER})(files), el = document.activeElement || document.body;
        el.dispatchEvent(new ClipboardEvent('paste', {{clipboardData: dt, bubbles: true, cancelable: true}})); }}""",
                  _page_files(paths))


def stop(proc):
    "Stop a server (SIGTERM lets Voila shut down the kernels it started), then make sure its process group is gone"
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try: proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL); proc.wait(5)


def model_file(request) -> Path:
    "`$IMGCLF_TEST_MODEL` (to check the app with a model of your own), else the model `imgclf demo` wrote"
    if os.environ.get('IMGCLF_TEST_MODEL'): return Path(os.environ['IMGCLF_TEST_MODEL'])
    proc, out = request.getfixturevalue('demo_run')
    path = out/'model.safetensors'
    assert path.is_file(), proc.stderr[-2000:]
    return path


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    "A wheel built from this checkout the way `pip install .` builds it"
    out = tmp_path_factory.mktemp('wheel')
    proc = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', str(ROOT), '-w', str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return next(out.glob('imgclf-*.whl'))


def test_wheel_ships_the_app_notebook(wheel):
    with zipfile.ZipFile(wheel) as z:
        assert z.read('imgclf/app.ipynb') == (ROOT/'nbs'/'07_app.ipynb').read_bytes()


def test_installed_package_finds_its_app_notebook(wheel, tmp_path):
    "After a plain (not editable) install, `imgclf app` serves the notebook inside the package, not a checkout's"
    site = tmp_path/'site'
    proc = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '-q', '--target', str(site), str(wheel)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    code = 'import imgclf.cli as c; print(c.app_notebook()); print(c.voila_command(9999, browser=False)[3])'
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, 'PYTHONPATH': str(site)}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == [str(site/'imgclf'/'app.ipynb')] * 2


def test_binder_settings_match_the_app():
    from imgclf.app import WEBSOCKET_LIMIT, MAX_UPLOAD
    conf = json.loads((ROOT/'binder'/'jupyter_server_config.json').read_text())
    assert conf['ServerApp']['tornado_settings']['websocket_max_message_size'] == WEBSOCKET_LIMIT
    assert conf['MappingKernelManager']['cull_connected'] is False and conf['MappingKernelManager']['cull_idle_timeout'] <= 300
    assert f'export IMGCLF_MAX_UPLOAD={MAX_UPLOAD}\n' in (ROOT/'binder'/'start').read_text()
    post = (ROOT/'binder'/'postBuild').read_text()
    assert 'pip install --no-cache-dir -e ".[app]"' in post, post  # the app's extra: Voila, ipywidgets 8, Jupyter Server
    assert "'jupyter_server_config.json'" in post, post  # where Jupyter Server applies settings (its .d folder: extensions only)
    req = (ROOT/'binder'/'requirements.txt').read_text()
    torch = re.search(r'^torch==2\.(\d+)\.\d+\+cpu$', req, re.M)
    vision = re.search(r'^torchvision==0\.(\d+)\.\d+\+cpu$', req, re.M)
    assert torch and vision and int(vision.group(1)) == int(torch.group(1)) + 15, req  # a released pair: 2.N with 0.(N+15)
    assert 'download.pytorch.org/whl/cpu' in req


@pytest.mark.skipif(not (ROOT/'.git').exists(), reason='not a git checkout')
def test_a_safe_model_can_be_committed():
    for path, ignored in [('models/bears.safetensors', False), ('bears.safetensors', False), ('models/bears.pkl', True)]:
        proc = subprocess.run(['git', 'check-ignore', '-q', path], cwd=ROOT)
        assert proc.returncode == (0 if ignored else 1), path


def test_relative_model_path_starts_at_the_repository_root(tmp_path):
    "Voila runs the app's kernel in nbs/: a relative IMGCLF_MODEL still means a path from the repository root"
    (tmp_path/'settings.ini').touch(); (tmp_path/'nbs').mkdir(); (tmp_path/'models').mkdir()
    (tmp_path/'models'/'bears.safetensors').touch()
    proc = subprocess.run([sys.executable, '-c', 'from imgclf.modelfile import find_model; print(find_model())'], cwd=tmp_path/'nbs',
                          env={**os.environ, 'IMGCLF_MODEL': 'models/bears.safetensors'}, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == str(tmp_path/'models'/'bears.safetensors'), proc.stderr[-2000:]


@pytest.fixture(scope='module')
def model(request):
    from imgclf.model import load_model
    return load_model(model_file(request))


def test_same_photo_same_answer(model):
    "Classifying one photo twice gives the same probabilities: no random augmentation at prediction time"
    from imgclf.app import ClassifierApp
    from imgclf.core import image_files
    from imgclf.photos import flower_photos
    app = ClassifierApp(model)
    data = image_files(flower_photos()/'rose')[5].read_bytes()
    runs = [app.classify(data, 'rose.jpg').probs for _ in range(3)]
    assert all(r == runs[0] for r in runs), f'the same photo got different answers: {runs}'


def test_app_kernel_does_not_import_fastai(request, tmp_path):
    "The app's kernel loads the model without fastai: less memory per visitor, and no pickle"
    path = model_file(request)
    code = ('import sys; from imgclf.app import load_app; a = load_app(); print(type(a).__name__); '
            'print(sorted(m for m in sys.modules if m.split(".")[0] == "fastai"))')
    proc = subprocess.run([sys.executable, '-c', code], env={**os.environ, 'IMGCLF_MODEL': str(path)}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.stdout.split('\n')[:2] == ['ClassifierApp', '[]'], proc.stdout + proc.stderr[-2000:]


def test_app_without_a_model_serves_what_imgclf_demo_wrote(request, tmp_path):
    "`imgclf app` with no --model and no $IMGCLF_MODEL serves the model `imgclf demo` wrote (IMGCLF_HOME/demo)"
    from conftest import start_and_read_port
    home = tmp_path/'home'; (home/'demo').mkdir(parents=True)
    shutil.copyfile(model_file(request), home/'demo'/'model.safetensors')
    env = {k: v for k, v in os.environ.items() if k != 'IMGCLF_MODEL'}
    env.update(IMGCLF_HOME=str(home), JUPYTER_RUNTIME_DIR=str(tmp_path/'runtime'), JUPYTER_CONFIG_DIR=str(tmp_path/'config'))
    proc, port = start_and_read_port([str(BIN/'imgclf'), 'app', '--no-browser', '--port', '0'], env, cwd=tmp_path)
    stop(proc)
    assert proc.lines[0] == f'Serving the app with {home/"demo"/"model.safetensors"} at http://127.0.0.1:{port}/  (Ctrl-C to stop)\n', proc.lines


@pytest.mark.parametrize('how', ['option', 'environment'])
def test_app_with_a_missing_model_says_so_in_one_line(tmp_path, how):
    "`imgclf app` with a model file that is not there: one line naming it, status 1, and no server started"
    missing = tmp_path/'models'/'gone.safetensors'
    env = {**os.environ, 'IMGCLF_HOME': str(tmp_path/'home')}
    args = [str(BIN/'imgclf'), 'app', '--no-browser', '--port', '0']
    if how == 'option': args += ['--model', 'models/gone.safetensors']  # relative: from where the command runs
    else: env['IMGCLF_MODEL'] = str(missing)
    proc = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, '', f'imgclf app: Model file not found: {missing}\n')


def test_app_on_a_busy_port_says_so_in_one_line(request, tmp_path):
    "`imgclf app` asked for a port another program listens on: one line saying so, status 1, never a silent move"
    import socket
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0)); busy.listen(1)
        port = busy.getsockname()[1]
        proc = subprocess.run([str(BIN/'imgclf'), 'app', '--no-browser', '--model', str(model_file(request)), '--port', str(port)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stdout == '', (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.startswith(f'imgclf app: Cannot listen on 127.0.0.1:{port}: another program is using that port') \
        and proc.stderr.count('\n') == 1, proc.stderr
